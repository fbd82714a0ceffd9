"""The circuit breaker takes an endpoint out after consecutive failures, lets one trial through after
the back-off, and doubles the back-off when the trial fails."""

from __future__ import annotations

from server.targets import CircuitBreaker
from tests.conftest import FakeClock


def test_opens_after_consecutive_failures_only() -> None:
    breaker = CircuitBreaker(failures=3, open_s=5, clock=FakeClock())
    breaker.failure()
    breaker.failure()
    breaker.success()  # the streak is broken
    breaker.failure()
    breaker.failure()
    assert breaker.available()
    breaker.failure()
    assert breaker.state == "open" and not breaker.available()


def test_one_trial_after_back_off_then_closes_on_success() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, open_s=5, clock=clock)
    breaker.failure()
    clock.now = 4.9
    assert not breaker.available()
    clock.now = 5.0
    assert breaker.state == "half-open" and breaker.available()
    breaker.begin()
    assert not breaker.available()  # only one trial at a time
    breaker.success()
    assert breaker.state == "closed" and breaker.available()


def test_failed_trial_doubles_the_back_off() -> None:
    clock = FakeClock()
    breaker = CircuitBreaker(failures=1, open_s=5, max_open_s=8, clock=clock)
    breaker.failure()
    clock.now = 5
    breaker.begin()
    breaker.failure()
    clock.now = 5 + 7.9
    assert not breaker.available()
    clock.now = 5 + 8  # doubled to 10, capped at 8
    assert breaker.available()
