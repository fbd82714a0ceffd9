"""Selection policies order a pool by blended price or latency; ties and manual keep list order."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.policies import Catalog, ModelInfo, load_catalog, order_models

CATALOG = Catalog(
    {
        "cheap-slow": ModelInfo("cheap-slow", 0.1, 0.1, 900),
        "pricey-fast": ModelInfo("pricey-fast", 3.0, 15.0, 100),
        "mid": ModelInfo("mid", 0.5, 2.0, 400),
        "mid-twin": ModelInfo("mid-twin", 0.5, 2.0, 400),
    }
)
POOL = ["pricey-fast", "mid-twin", "mid", "cheap-slow"]


def test_cheapest_sorts_by_blended_price_and_keeps_ties_in_list_order() -> None:
    assert order_models(POOL, "cheapest", CATALOG) == ("cheap-slow", "mid-twin", "mid", "pricey-fast")


def test_fastest_sorts_by_latency() -> None:
    assert order_models(POOL, "fastest", CATALOG) == ("pricey-fast", "mid-twin", "mid", "cheap-slow")


def test_manual_keeps_the_operators_order() -> None:
    assert order_models(POOL, None, CATALOG) == tuple(POOL)


def test_blended_price_weights_input_three_to_one() -> None:
    assert ModelInfo("m", 1.0, 5.0, 1).blended_price_per_mtok == pytest.approx(2.0)


def test_unknown_preference_is_refused() -> None:
    with pytest.raises(ValueError, match="allowed: cheapest, fastest"):
        order_models(POOL, "random", CATALOG)


def test_catalog_errors_name_the_model(tmp_path: Path) -> None:
    path = tmp_path / "catalog.yaml"
    path.write_text("models:\n  m1: {input_price_per_mtok: 1, latency_ms: 3, output_price_per_mtok: x}\n")
    with pytest.raises(ValueError, match="model 'm1' needs"):
        load_catalog(path)
    path.write_text("models: []\n")
    with pytest.raises(ValueError, match="non-empty 'models:' mapping"):
        load_catalog(path)
