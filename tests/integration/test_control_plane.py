"""The HTTP control plane in the hosted routers' API shape, driven with plain HTTP requests, as a
script written for the hosted API would drive it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import ServerThread

ROUTERS = "/v2/gen-ai/models/routers"


def body(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "description": "Routes tickets of a help desk",
        "policies": [
            {
                "custom_task": {"name": "billing", "description": "Questions about invoices and payments."},
                "models": ["llama-3.1-8b-instruct", "gpt-4o-mini"],
                "selection_policy": {"prefer": "cheapest"},
            },
            {
                "custom_task": {"name": "bug", "description": "Reports of errors or broken features."},
                "models": ["gpt-4o"],
            },
        ],
        "fallback_models": ["gpt-4o-mini"],
    }


@pytest.fixture(scope="module")
def http(served: ServerThread) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{served.http_port}", timeout=30) as client:
        yield client


def test_create_get_list_update_delete(http: httpx.Client) -> None:
    created = http.post(ROUTERS, json=body("helpdesk"))
    assert created.status_code == 201, created.text
    router = created.json()["model_router"]
    assert router["name"] == "helpdesk" and router["uuid"]
    assert router["config"]["fallback_models"] == ["gpt-4o-mini"]
    assert router["config"]["policies"][0]["custom_task"]["name"] == "billing"
    assert router["created_at"].endswith("Z") and router["updated_at"].endswith("Z")

    uuid = router["uuid"]
    assert http.get(f"{ROUTERS}/{uuid}").json()["model_router"]["name"] == "helpdesk"
    listed = http.get(ROUTERS).json()
    assert "helpdesk" in [r["name"] for r in listed["model_routers"]] and listed["meta"]["total"] >= 3

    changed = body("helpdesk-v2")
    changed["fallback_models"] = ["llama-3.1-8b-instruct"]
    updated = http.put(f"{ROUTERS}/{uuid}", json=changed)
    assert updated.status_code == 200, updated.text
    router = updated.json()["model_router"]
    assert (router["uuid"], router["name"], router["version"]) == (uuid, "helpdesk-v2", 2)
    assert router["config"]["fallback_models"] == ["llama-3.1-8b-instruct"]

    # The renamed router serves classification under its new name right away.
    models = http.get("/v1/models").json()["data"]
    assert "router:helpdesk-v2" in [m["id"] for m in models]

    assert http.delete(f"{ROUTERS}/{uuid}").status_code == 204
    gone = http.get(f"{ROUTERS}/{uuid}")
    assert gone.status_code == 404 and gone.json()["id"] == "not_found"


def test_duplicate_name_is_invalid_argument(http: httpx.Client) -> None:
    first = http.post(ROUTERS, json=body("dupe"))
    assert first.status_code == 201
    again = http.post(ROUTERS, json=body("dupe"))
    assert again.status_code == 400
    error = again.json()
    assert error["id"] == "invalid_argument" and "already exists" in error["message"]
    http.delete(f"{ROUTERS}/{first.json()['model_router']['uuid']}")


@pytest.mark.parametrize(
    ("mutate", "problem"),
    [
        (lambda b: b.pop("fallback_models"), "fallback_models is missing"),
        (lambda b: b["policies"][0].update(models=["a", "b", "c", "d"]), "at most 3 allowed"),
        (lambda b: b["policies"][1]["custom_task"].pop("description"), "description must be a non-empty"),
        (lambda b: b["policies"][0].update(selection_policy={"prefer": "random"}), "allowed: cheapest"),
        (lambda b: b["policies"][1]["custom_task"].update(name="billing"), "duplicates task name"),
    ],
)
def test_malformed_definitions_name_the_problem(http: httpx.Client, mutate: Any, problem: str) -> None:
    broken = body("broken")
    mutate(broken)
    response = http.post(ROUTERS, json=broken)
    assert response.status_code == 400
    assert response.json()["id"] == "invalid_argument" and problem in response.json()["message"]
    assert "broken" not in [r["name"] for r in http.get(ROUTERS).json()["model_routers"]]
