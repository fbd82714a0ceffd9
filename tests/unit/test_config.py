"""Config precedence: defaults < file < environment < flags; cross-field errors name the values."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from server.config import load_config


def test_defaults_serve_the_shipped_routers_on_loopback() -> None:
    cfg = load_config([])
    assert (cfg.server.host, cfg.server.port) == ("127.0.0.1", 50051)
    assert cfg.model.checkpoint is None and cfg.model.device == "auto"
    assert cfg.routers.dir is not None and (cfg.routers.dir / "support.yaml").is_file()


def test_precedence_file_then_env_then_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "taskrouter.yaml"
    path.write_text("server: {host: 0.0.0.0, port: 9000}\nbatching: {max_batch_requests: 8}\n")
    cfg = load_config(["--config", str(path)])
    assert (cfg.server.host, cfg.server.port, cfg.batching.max_batch_requests) == ("0.0.0.0", 9000, 8)
    monkeypatch.setenv("TASKROUTER_SERVER__PORT", "7000")
    cfg = load_config(["--config", str(path)])
    assert (cfg.server.host, cfg.server.port) == ("0.0.0.0", 7000)  # env beats file, file fills the rest
    cfg = load_config(["--config", str(path), "--port", "6000", "--device", "cpu"])
    assert (cfg.server.port, cfg.model.device) == (6000, "cpu")


def test_cross_field_check_names_both_values() -> None:
    with pytest.raises(
        ValidationError, match="max_queued_requests=2 must be >= batching.max_batch_requests=4"
    ):
        load_config([], batching={"max_queued_requests": 2, "max_batch_requests": 4})


def test_unknown_keys_and_missing_file_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server: {prot: 1}\n")
    with pytest.raises(ValidationError, match="prot"):
        load_config(["--config", str(path)])
    with pytest.raises(ValueError, match="does not exist"):
        load_config(["--config", str(tmp_path / "missing.yaml")])


def test_config_is_frozen() -> None:
    cfg = load_config([])
    with pytest.raises(ValidationError):
        cfg.server.port = 1  # type: ignore[misc]
