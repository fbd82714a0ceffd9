"""The numbers behind the console without a browser: the recent-traffic window and evaluation scores."""

from __future__ import annotations

import json

import pytest

from server.console.evaluate import Row, score
from server.telemetry.recent import RecentTraffic
from tests.conftest import FakeClock


def test_recent_traffic_counts_only_the_window_and_keeps_quiet_minutes_as_zeros() -> None:
    clock = FakeClock()
    clock.now = 1_000_000 * 60.0
    recent = RecentTraffic(clock=clock)
    recent.add(True, 10.0, "support", "billing", True, "m1", 0.5)  # an hour ago
    clock.now += 3600
    for ms in (1.0, 2.0, 3.0, 4.0, 100.0):
        recent.add(True, ms, "support", "billing", True, "m1", 0.25)
    recent.add(True, 5.0, "support", "fallback", False, "m2", None)
    recent.add(False, 1.0, "", "", None, "", None)
    s = recent.summary(900)
    assert (s["requests"], s["errors"], s["classified"], s["matched"]) == (7, 1, 6, 5)
    assert s["match_rate"] == pytest.approx(5 / 6) and s["fallback_rate"] == pytest.approx(1 / 6)
    assert s["tasks"] == [
        {"router": "support", "task": "billing", "count": 5},
        {"router": "support", "task": "fallback", "count": 1},
    ]
    assert s["cost_usd"] == pytest.approx(1.25)
    # Log bins 5% wide, upper edge: never under, at most 5% over.
    assert 3.0 <= s["latency_ms"]["p50"] <= 3.0 * 1.051 and 100.0 <= s["latency_ms"]["p99"] <= 105.1
    assert len(s["series"]) == 15 and sum(p["requests"] for p in s["series"]) == 7
    assert s["series"][-1]["requests"] == 7 and s["series"][0]["requests"] == 0
    assert recent.summary(7200)["requests"] == 8
    assert len(recent.summary(86400)["series"]) <= 120


def test_the_router_filter_applies_to_every_panel_and_planned_models_stay_apart() -> None:
    clock = FakeClock()
    clock.now = 1_000_000 * 60.0
    recent = RecentTraffic(clock=clock)
    recent.add(True, 10.0, "support", "billing", True, "cheap", 0.5)
    recent.add(True, 12.0, "support", "billing", True, "strong", None, served=False)  # Route / Playground
    recent.add(True, 20.0, "coding", "debug", True, "strong", 2.0)
    s = recent.summary(900, "support")
    assert (s["requests"], s["classified"], s["cost_usd"]) == (2, 2, 0.5)
    assert s["models"] == [{"model": "cheap", "count": 1}]
    assert s["planned_models"] == [{"model": "strong", "count": 1}]
    assert s["tasks"] == [{"router": "support", "task": "billing", "count": 2}]
    everything = recent.summary(900)
    assert everything["requests"] == 3 and everything["cost_usd"] == pytest.approx(2.5)
    assert {m["model"]: m["count"] for m in everything["models"]} == {"cheap": 1, "strong": 1}


def test_other_workers_traffic_merges_into_the_summary() -> None:
    clock = FakeClock()
    clock.now = 1_000_000 * 60.0
    mine, theirs = RecentTraffic(clock=clock), RecentTraffic(clock=clock)
    mine.add(True, 10.0, "support", "billing", True, "cheap", 0.5)
    for ms in (1.0, 100.0, 100.0):
        theirs.add(True, ms, "support", "bug", False, "cheap", 0.25)
    merged = mine.summary(900, None, [json.loads(json.dumps(theirs.export()))])  # as read from its file
    assert (merged["requests"], merged["classified"], merged["matched"]) == (4, 4, 1)
    assert merged["models"] == [{"model": "cheap", "count": 4}] and merged["cost_usd"] == pytest.approx(1.25)
    assert 100.0 <= merged["latency_ms"]["p90"] <= 105.1
    assert sum(p["requests"] for p in merged["series"]) == 4


def test_evaluation_scores_accuracy_fallback_precision_recall_and_cost() -> None:
    rows = [
        Row("billing", "billing", 1.0, 10.0),
        Row("billing", "fallback", 1.0, 10.0),
        Row("fallback", "fallback", 2.0, 10.0),
        Row("fallback", "bug", 1.0, 10.0),
        Row("refund", "billing", 1.0, 10.0),  # a label the router has no task for
    ]
    s = score(rows, ["billing", "bug"], "big-model")
    assert s["accuracy"] == pytest.approx(2 / 5)
    assert s["fallback_precision"] == pytest.approx(1 / 2) and s["fallback_recall"] == pytest.approx(1 / 2)
    assert s["labels"] == ["billing", "bug", "fallback", "refund"] and s["unknown_labels"] == ["refund"]
    assert s["confusion"][0] == [1, 0, 1]  # billing: 1 billing, 1 fallback
    assert s["confusion"][3] == [1, 0, 0]
    assert s["cost"]["routed_usd"] == 6.0 and s["cost"]["baseline_usd"] == 50.0
    assert s["cost"]["saving"] == pytest.approx(0.88)


def test_the_threshold_sweep_finds_the_threshold_that_separates_out_of_scope_prompts() -> None:
    rows = [Row("billing", "billing", 0, 0, "billing", 0.6), Row("billing", "billing", 0, 0, "billing", 0.5)]
    rows += [Row("fallback", "billing", 0, 0, "billing", s) for s in (0.3, 0.35, 0.4)]
    sweep = score(rows, ["billing"], "m", threshold=0.2)["threshold"]
    at = {p["threshold"]: p["accuracy"] for p in sweep["points"]}
    assert at[0.2] == pytest.approx(2 / 5) and sweep["current"] == 0.2
    assert 0.4 < sweep["best"]["threshold"] <= 0.5 and sweep["best"]["accuracy"] == 1.0
