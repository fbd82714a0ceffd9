"""The request record and the request log without a server: what a line holds, prompt text only when
asked, and a log that cannot be written does not fail the request."""

from __future__ import annotations

import json
from pathlib import Path

from models import ChatMessage
from server.config import TelemetrySection
from server.errors import NotFound
from server.telemetry.core import Telemetry, _error_kind


def test_prompt_text_is_logged_only_when_turned_on(tmp_path: Path) -> None:
    for with_prompts in (False, True):
        path = tmp_path / f"log-{with_prompts}.jsonl"
        telemetry = Telemetry(TelemetrySection(request_log=path, log_prompts=with_prompts))
        with telemetry.request("Classify") as record:
            record.messages = [ChatMessage("user", "my card was charged twice")]
        telemetry.close()
        line = json.loads(path.read_text())
        assert line["api"] == "Classify" and line["outcome"] == "OK"
        assert ("messages" in line) is with_prompts
        if with_prompts:
            assert line["messages"] == [{"role": "user", "content": "my card was charged twice"}]


def test_an_error_is_recorded_with_its_status_and_still_raised(tmp_path: Path) -> None:
    telemetry = Telemetry(TelemetrySection(request_log=tmp_path / "log.jsonl"))
    try:
        with telemetry.request("Route"):
            raise NotFound("unknown router 'x'; known: support")
    except NotFound:
        pass
    else:
        raise AssertionError("the error was swallowed")
    line = json.loads((tmp_path / "log.jsonl").read_text())
    assert line["outcome"] == "NOT_FOUND" and line["error"] == "unknown router 'x'; known: support"
    samples = telemetry.metrics.render().decode()
    assert (
        'taskrouter_requests_total{api="Route",model="",outcome="NOT_FOUND",router="",task=""} 1.0' in samples
    )


def test_a_log_that_cannot_be_written_does_not_fail_requests(tmp_path: Path) -> None:
    telemetry = Telemetry(TelemetrySection(request_log=tmp_path / "log.jsonl"))
    assert telemetry.log is not None
    telemetry.log.close()  # every later write fails at the OS level: the request must not notice
    telemetry.log._fd = 10_000
    with telemetry.request("Classify"):
        pass


def test_failed_attempt_reasons_become_bounded_labels() -> None:
    assert _error_kind("HTTP 503") == "http_503"
    assert _error_kind("timeout") == "timeout"
    assert _error_kind("connection error") == "connection"
    assert _error_kind("invalid JSON in the stream") == "other"
