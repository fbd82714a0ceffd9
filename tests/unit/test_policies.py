"""Selection policies with live signals: cheapest prices the request's own token estimate, fastest
follows measured time to first token (priors until measured), manual keeps list order; candidates
that are unhealthy, too small or over the cost cap are left out with a reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.routing.policies import admissible, estimate_input_tokens, order_models
from server.targets import Catalog, LatencyStats, load_catalog

CATALOG = Catalog.model_validate(
    {
        "models": {
            # cheap to read, dear to write
            "reader": {"input_price_per_mtok": 0.1, "output_price_per_mtok": 10.0, "latency_ms": 900},
            # dear to read, cheap to write
            "writer": {"input_price_per_mtok": 5.0, "output_price_per_mtok": 0.5, "latency_ms": 100},
            "mid": {"input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0, "latency_ms": 400},
            "mid-twin": {"input_price_per_mtok": 1.0, "output_price_per_mtok": 2.0, "latency_ms": 400},
            "unknown-speed": {
                "input_price_per_mtok": 1.0,
                "output_price_per_mtok": 1.0,
                "context_tokens": 1000,
            },
        }
    }
)
POOL = ["writer", "mid-twin", "mid", "reader"]


def test_cheapest_depends_on_the_request_shape() -> None:
    stats = LatencyStats()
    long_prompt = order_models(POOL, "cheapest", CATALOG, stats, input_tokens=50_000, output_tokens=100)
    long_answer = order_models(POOL, "cheapest", CATALOG, stats, input_tokens=100, output_tokens=50_000)
    assert long_prompt == ("reader", "mid-twin", "mid", "writer")  # ties keep list order
    assert long_answer == ("writer", "mid-twin", "mid", "reader")


def test_fastest_uses_priors_until_measured_then_measurements() -> None:
    stats = LatencyStats(alpha=0.5)
    order = order_models([*POOL, "unknown-speed"], "fastest", CATALOG, stats, 10, 10)
    assert order == ("writer", "mid-twin", "mid", "reader", "unknown-speed")  # no prior: last
    stats.record_ttft("writer", 2000)
    stats.record_ttft("unknown-speed", 50)
    stats.record_latency("reader", 300)  # non-streamed latency counts when no TTFT is known
    order = order_models([*POOL, "unknown-speed"], "fastest", CATALOG, stats, 10, 10)
    assert order == ("unknown-speed", "reader", "mid-twin", "mid", "writer")


def test_moving_average_follows_recent_samples() -> None:
    stats = LatencyStats(alpha=0.5)
    for ms in (100, 100, 500):
        stats.record_ttft("m", ms)
    assert stats.expected_ms("m", None) == pytest.approx(300)
    assert stats.snapshot("m")["ttft_samples"] == 3


def test_manual_keeps_the_operators_order() -> None:
    assert order_models(POOL, None, CATALOG, LatencyStats(), 10, 10) == tuple(POOL)


def test_unknown_preference_is_refused() -> None:
    with pytest.raises(ValueError, match="allowed: cheapest, fastest"):
        order_models(POOL, "random", CATALOG, LatencyStats(), 10, 10)


def test_admissible_skips_unhealthy_small_and_over_budget_models() -> None:
    keep, skipped = admissible(
        ["mid", "unknown-speed", "reader", "writer"],
        CATALOG,
        healthy=lambda m: m != "mid",
        input_tokens=990,
        output_tokens=50,
        max_cost_usd=0.001,
    )
    assert keep == ["reader"]
    reasons = {s.model: s.reason for s in skipped}
    assert reasons["mid"] == "unhealthy"
    assert "context is 1000" in reasons["unknown-speed"]
    assert "exceeds the cap" in reasons["writer"]  # 990 x $5/M = $0.00495


def test_input_token_estimate_counts_characters_and_messages() -> None:
    assert estimate_input_tokens(["a" * 400, ""]) == 100 + 2 * 4


def test_catalog_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("models:\n  m1: {input_price_per_mtok: 1, output_price_per_mtok: x}\n")
    with pytest.raises(ValueError, match="models.m1.output_price_per_mtok"):
        load_catalog(path)
    path.write_text("models: {}\n")
    with pytest.raises(ValueError, match="models is empty"):
        load_catalog(path)
    path.write_text("models:\n  m1: {input_price_per_mtok: 1, output_price_per_mtok: 1, pool: nowhere}\n")
    with pytest.raises(ValueError, match="unknown pool 'nowhere'"):
        load_catalog(path)
    path.write_text(
        "pools:\n  p: {kind: vllm}\nmodels:\n  m1: {input_price_per_mtok: 1, output_price_per_mtok: 1}\n"
    )
    with pytest.raises(ValueError, match="needs endpoints"):
        load_catalog(path)
    path.write_text(
        "pools:\n  p: {kind: openai, base_url: 'http://x/v1', api_key_env: 'sk-live-abc'}\nmodels: {}\n"
    )
    with pytest.raises(ValueError, match="api_key_env"):  # a key pasted where its variable's name goes
        load_catalog(path)
