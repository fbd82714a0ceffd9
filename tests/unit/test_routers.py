"""Router definitions: every shipped file parses; each kind of broken definition is named in the error."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.config import DEFAULTS_DIR
from server.errors import InvalidInput
from server.routing.spec import load_router_dir, parse_router, read_router_file
from server.targets import Catalog, load_catalog

CATALOG = Catalog(
    models={
        n: {"input_price_per_mtok": p, "output_price_per_mtok": p, "latency_ms": lat}
        for n, p, lat in [("a", 1.0, 300), ("b", 0.5, 200), ("c", 2.0, 100), ("d", 1, 1)]
    }
)
GOOD: dict[str, Any] = {
    "name": "r1",
    "description": "test router",
    "policies": [
        {"custom_task": {"name": "t1", "description": "first task"}, "models": ["a", "b"]},
        {
            "custom_task": {"name": "t2", "description": "second task", "examples": ["e1", "e2"]},
            "models": ["c"],
            "selection_policy": {"prefer": "cheapest"},
        },
    ],
    "fallback_models": ["a"],
}


def broken(path: str, value: Any) -> dict[str, Any]:
    """GOOD with the value at a dotted path ("policies.0.models") replaced; None deletes it."""
    raw = copy.deepcopy(GOOD)
    *parents, leaf = path.split(".")
    node: Any = raw
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    key: Any = int(leaf) if leaf.isdigit() else leaf
    if value is None:
        del node[key]
    else:
        node[key] = value
    return raw


def test_shipped_catalog_and_routers_parse() -> None:
    catalog = load_catalog(DEFAULTS_DIR / "catalog.yaml")
    specs = load_router_dir(DEFAULTS_DIR / "routers", catalog)
    assert {s.name for s in specs} == {"support", "coding-agent"}
    tasks = {s.name: [t.name for t in s.tasks] for s in specs}
    assert tasks == {
        "support": ["classify", "customer-qa", "reasoning"],
        "coding-agent": ["chore", "design", "debug", "repo-qa"],
    }
    assert all(t.description and t.models for s in specs for t in s.tasks)


def test_good_definition_round_trips() -> None:
    spec = parse_router(GOOD, CATALOG)
    assert spec.tasks[1].examples == ("e1", "e2") and spec.tasks[1].prefer == "cheapest"
    assert spec.tasks[0].prefer is None and spec.threshold is None
    assert parse_router(spec.to_dict(), CATALOG) == spec


def test_no_match_fields_round_trip_and_a_bare_threshold_stays_a_cosine() -> None:
    """context, criterion and fallback_examples survive to_dict (what the state file stores); a
    threshold set without a criterion is read in similarity units, as before criteria existed."""
    raw = {
        **copy.deepcopy(GOOD),
        "context": "conversation",
        "criterion": "calibrated",
        "threshold": 1.5,
        "fallback_examples": ["what's the weather", "tell me a joke"],
    }
    spec = parse_router(raw, CATALOG)
    assert (spec.context, spec.criterion, spec.threshold) == ("conversation", "calibrated", 1.5)
    assert spec.fallback_examples == ("what's the weather", "tell me a joke")
    assert parse_router(json.loads(json.dumps(spec.to_dict())), CATALOG) == spec
    assert spec.resolved_criterion("similarity") == "calibrated"
    bare = parse_router({**copy.deepcopy(GOOD), "threshold": 0.3}, CATALOG)
    assert bare.criterion is None and bare.resolved_criterion("calibrated") == "similarity"
    assert parse_router(copy.deepcopy(GOOD), CATALOG).resolved_criterion("calibrated") == "calibrated"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (broken("policies.1.custom_task.name", "t1"), "duplicates task name 't1'"),
        (
            broken("policies.0.custom_task.description", "  "),
            "policies[0].custom_task.description must be a non-empty",
        ),
        (
            broken("policies.0.custom_task.description", None),
            "policies[0].custom_task.description must be a non-empty",
        ),
        (broken("policies.0.models", ["a", "b", "c", "d"]), "lists 4 models; at most 3 allowed"),
        (broken("policies.0.models", []), "policies[0].models must list 1 to 3 models"),
        (broken("policies.0.models", ["a", "zz"]), "unknown model 'zz'; known: a, b, c, d"),
        (broken("policies.0.models", ["a", "a"]), "lists a model twice"),
        (
            broken("policies.1.selection_policy", {"prefer": "smartest"}),
            "is 'smartest'; allowed: cheapest, fastest",
        ),
        (broken("policies.1.selection_policy", {"prefer": "cheapest", "x": 1}), "unknown keys ['x']"),
        (broken("fallback_models", None), "fallback_models is missing"),
        (broken("fallback_models", []), "fallback_models is missing"),
        (broken("policies", []), "policies must list at least one task"),
        (broken("policies.0.custom_task.name", "fallback"), "'fallback' is reserved"),
        (broken("policies.0.custom_task.name", "bad name!"), "is not a valid name"),
        (broken("name", ""), "name '' is not a valid name"),
        (broken("threshold", 3), "threshold is 3; use a number in [-1, 1]"),
        (broken("threshold", float("nan")), "threshold is nan; use a number in [-1, 1]"),
        (broken("criterion", "margin"), "criterion is 'margin'; allowed: calibrated, similarity"),
        (broken("context", "all"), "context is 'all'; allowed: latest_turn, conversation"),
        (broken("fallback_examples", "one"), "fallback_examples must be a list"),
        (broken("fallback_examples", ["ok", " "]), "fallback_examples[1] must be a non-empty string"),
        (broken("policies.0.custom_task.examples", "one"), "examples must be a list"),
        (broken("polices", [1]), "unknown keys ['polices']"),
        ("not a mapping", "definition must be a mapping"),
    ],
)
def test_broken_definitions_name_the_problem(raw: Any, expected: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_router(raw, CATALOG)
    assert expected in str(info.value)


def test_router_directory_yaml_and_json(tmp_path: Path) -> None:
    (tmp_path / "one.json").write_text(json.dumps(GOOD))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "two.yaml").write_text(yaml.safe_dump({**GOOD, "name": "r2"}))
    assert [s.name for s in load_router_dir(tmp_path, CATALOG)] == ["r1", "r2"]
    (tmp_path / "three.yml").write_text(yaml.safe_dump(GOOD))
    with pytest.raises(InvalidInput, match="router 'r1' is already defined in"):
        load_router_dir(tmp_path, CATALOG)


def test_malformed_file_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("name: [unclosed\n")
    with pytest.raises(InvalidInput, match="bad.yaml"):
        read_router_file(path, CATALOG)
