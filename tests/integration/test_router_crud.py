"""Router management over gRPC: create, get, list, update, delete; bad definitions change nothing."""

from __future__ import annotations

import json

import grpc
import pytest
from google.protobuf import json_format

from models import DEFAULT_CHECKPOINT
from taskrouter.v1 import taskrouter_pb2 as pb
from taskrouter.v1 import taskrouter_pb2_grpc as pb_grpc

DEFINITION = {
    "name": "helpdesk-test",
    "description": "IT helpdesk",
    "policies": [
        {
            "custom_task": {
                "name": "vpn",
                "description": "Problems connecting to the company VPN or remote network access.",
                "examples": [
                    "The VPN client says authentication failed",
                    "I can't reach the intranet from home",
                ],
            },
            "models": ["gpt-4o-mini", "llama-3.1-8b-instruct"],
            "selection_policy": {"prefer": "cheapest"},
        },
        {
            "custom_task": {
                "name": "printer",
                "description": "Printers that jam, print blank pages or go offline.",
            },
            "models": ["llama-3.1-8b-instruct"],
        },
    ],
    "fallback_models": ["gpt-4o-mini"],
}


def router(definition: dict) -> pb.Router:
    return json_format.ParseDict(definition, pb.Router())


def test_router_lifecycle(stub: pb_grpc.TaskRouterStub) -> None:
    created = stub.CreateRouter(pb.CreateRouterRequest(router=router(DEFINITION)))
    try:
        assert created.version == 1 and created.create_time.seconds > 0 and len(created.uuid) == 36
        as_dict = json_format.MessageToDict(created, preserving_proto_field_name=True)
        for key in ("version", "create_time", "update_time", "uuid", "no_match"):
            as_dict.pop(key)
        assert as_dict == DEFINITION
        assert stub.GetRouter(pb.GetRouterRequest(name="helpdesk-test")) == created
        names = [r.name for r in stub.ListRouters(pb.ListRoutersRequest()).routers]
        assert names == sorted(names) and "helpdesk-test" in names

        answer = stub.Route(pb.RouteRequest(router="helpdesk-test", prompt="my vpn keeps disconnecting"))
        assert answer.classification.task == "vpn"
        assert list(answer.models) == ["llama-3.1-8b-instruct", "gpt-4o-mini"]  # cheapest first

        with pytest.raises(grpc.RpcError) as info:
            stub.CreateRouter(pb.CreateRouterRequest(router=router(DEFINITION)))
        assert info.value.code() == grpc.StatusCode.ALREADY_EXISTS

        changed = {**DEFINITION, "threshold": 0.99}
        updated = stub.UpdateRouter(pb.UpdateRouterRequest(router=router(changed)))
        assert (updated.version, updated.threshold) == (2, pytest.approx(0.99))
        assert updated.create_time == created.create_time
        after = stub.Classify(pb.ClassifyRequest(router="helpdesk-test", prompt="my vpn keeps disconnecting"))
        assert (after.task, after.router_version, after.threshold) == ("fallback", 2, pytest.approx(0.99))
    finally:
        stub.DeleteRouter(pb.DeleteRouterRequest(name="helpdesk-test"))
    with pytest.raises(grpc.RpcError) as info:
        stub.GetRouter(pb.GetRouterRequest(name="helpdesk-test"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as info:
        stub.DeleteRouter(pb.DeleteRouterRequest(name="helpdesk-test"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize(
    ("mutate", "phrase"),
    [
        (lambda d: d["policies"][1]["custom_task"].update(name="vpn"), "duplicates task name 'vpn'"),
        (lambda d: d["policies"][0]["custom_task"].update(description=""), "description must be a non-empty"),
        (
            lambda d: d["policies"][0].update(models=["gpt-4o", "gpt-4o-mini", "o3-mini", "deepseek-r1"]),
            "at most 3 allowed",
        ),
        (
            lambda d: d["policies"][0].update(selection_policy={"prefer": "smartest"}),
            "allowed: cheapest, fastest",
        ),
        (lambda d: d.pop("fallback_models"), "fallback_models is missing"),
        (lambda d: d["policies"][0].update(models=["gpt-9"]), "unknown model 'gpt-9'"),
        (lambda d: d.update(name="bad name"), "is not a valid name"),
    ],
)
def test_malformed_definitions_are_invalid_argument(
    stub: pb_grpc.TaskRouterStub, mutate, phrase: str
) -> None:
    import copy

    definition = copy.deepcopy(DEFINITION)
    mutate(definition)
    with pytest.raises(grpc.RpcError) as info:
        stub.CreateRouter(pb.CreateRouterRequest(router=router(definition)))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert phrase in info.value.details()
    assert "helpdesk-test" not in [r.name for r in stub.ListRouters(pb.ListRoutersRequest()).routers]


def test_bad_update_leaves_the_old_definition_serving(stub: pb_grpc.TaskRouterStub) -> None:
    before = stub.GetRouter(pb.GetRouterRequest(name="support"))
    broken = pb.Router()
    broken.CopyFrom(before)
    del broken.fallback_models[:]
    with pytest.raises(grpc.RpcError) as info:
        stub.UpdateRouter(pb.UpdateRouterRequest(router=broken))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "fallback_models is missing" in info.value.details()
    assert stub.GetRouter(pb.GetRouterRequest(name="support")) == before
    answer = stub.Route(pb.RouteRequest(router="support", prompt="How do I cancel my subscription?"))
    assert answer.classification.router_version == before.version and list(answer.models)


def test_update_of_unknown_router_is_not_found(stub: pb_grpc.TaskRouterStub) -> None:
    with pytest.raises(grpc.RpcError) as info:
        stub.UpdateRouter(pb.UpdateRouterRequest(router=router({**DEFINITION, "name": "ghost"})))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


def test_create_while_classifying_disturbs_nobody(stub: pb_grpc.TaskRouterStub) -> None:
    request = pb.ClassifyRequest(router="support", prompt="How do I cancel my subscription?")
    futures = [stub.Classify.future(request) for _ in range(32)]
    definition = {**DEFINITION, "name": "concurrent-test"}
    created = stub.CreateRouter.future(pb.CreateRouterRequest(router=router(definition)))
    try:
        assert created.result(timeout=60).version == 1
        assert {f.result(timeout=60).task for f in futures} == {"customer-qa"}
    finally:
        stub.DeleteRouter(pb.DeleteRouterRequest(name="concurrent-test"))


def test_threshold_source_is_fitted_explicit_or_the_checkpoint_default(stub: pb_grpc.TaskRouterStub) -> None:
    """With fallback examples the threshold is fitted by cross-validation at load and comes back
    with the precision and recall it expects; an explicit threshold wins; without examples of
    either kind the checkpoint's default applies. A fitted router then sends its kind of
    off-topic prompt to fallback and keeps its tasks."""
    printer = DEFINITION["policies"][1]
    fitted_definition = {
        **DEFINITION,
        "name": "helpdesk-fitted",
        "policies": [
            DEFINITION["policies"][0],
            {
                **printer,
                "custom_task": {
                    **printer["custom_task"],
                    "examples": [
                        "The printer on floor 3 keeps jamming",
                        "Printing gives blank pages since this morning",
                        "The office printer shows as offline",
                    ],
                },
            },
        ],
        "fallback_examples": [
            "What time does the cafeteria open?",
            "Can I bring my dog to the office on Fridays?",
            "Book a meeting room for the quarterly review",
            "How many vacation days do I have left?",
            "Recommend a good restaurant near the office",
        ],
    }
    created = {
        name: stub.CreateRouter(pb.CreateRouterRequest(router=router(d)))
        for name, d in (
            ("fitted", fitted_definition),
            (
                "explicit",
                {
                    **fitted_definition,
                    "name": "helpdesk-explicit",
                    "criterion": "calibrated",
                    "threshold": 1.5,
                },
            ),
            ("examples", {**DEFINITION, "name": "helpdesk-examples"}),
            (
                "plain",
                {
                    **DEFINITION,
                    "name": "helpdesk-plain",
                    "policies": [
                        {**p, "custom_task": {k: v for k, v in p["custom_task"].items() if k != "examples"}}
                        for p in DEFINITION["policies"]
                    ],
                },
            ),
        )
    }
    try:
        fitted = created["fitted"].no_match
        assert (fitted.threshold_source, fitted.criterion, fitted.context) == (
            "fitted",
            "calibrated",
            "latest_turn",
        )
        assert (fitted.examples, fitted.fallback_examples) == (5, 5)
        assert fitted.HasField("expected_fallback_recall") and 0 <= fitted.expected_fallback_recall <= 1
        assert fitted.HasField("expected_fallback_precision")
        explicit = created["explicit"].no_match
        assert (explicit.threshold_source, explicit.threshold) == ("router", 1.5)
        # What cross-validation expects is measured at the router's own threshold, not a fitted one.
        assert explicit.HasField("expected_fallback_recall") and explicit.examples == 5
        plain = created["plain"].no_match
        assert plain.threshold_source == "checkpoint" and not plain.HasField("expected_fallback_recall")
        # Examples alone can only lower the checkpoint's default for routers with examples (so that
        # they stay matched), never raise it.
        examples = created["examples"].no_match
        config = json.loads((DEFAULT_CHECKPOINT / "config.json").read_text())
        assert plain.threshold == pytest.approx(config["calibrated_threshold"])
        assert examples.threshold_source == "fitted"
        assert examples.threshold <= config["calibrated_threshold_examples"] + 1e-9
        assert (examples.examples, examples.fallback_examples) == (2, 0)
        assert stub.GetRouter(pb.GetRouterRequest(name="helpdesk-fitted")).no_match == fitted

        off = stub.Classify(
            pb.ClassifyRequest(router="helpdesk-fitted", prompt="Is the parking garage open on Sunday?")
        )
        assert off.task == "fallback" and off.criterion_value < off.threshold == pytest.approx(
            fitted.threshold
        )
        on = stub.Classify(
            pb.ClassifyRequest(router="helpdesk-fitted", prompt="the printer is out of toner and jams")
        )
        assert on.task == "printer" and on.criterion_value >= on.threshold
    finally:
        for c in created.values():
            stub.DeleteRouter(pb.DeleteRouterRequest(name=c.name))


def test_a_threshold_without_a_criterion_keeps_its_old_meaning(stub: pb_grpc.TaskRouterStub) -> None:
    """Definitions written before criteria existed set `threshold` in similarity units; they keep
    it. Out-of-range values name the units they are read in."""
    created = stub.CreateRouter(
        pb.CreateRouterRequest(router=router({**DEFINITION, "name": "helpdesk-old", "threshold": 0.3}))
    )
    try:
        assert (created.no_match.criterion, created.no_match.threshold) == ("similarity", pytest.approx(0.3))
        answer = stub.Classify(pb.ClassifyRequest(router="helpdesk-old", prompt="my vpn keeps disconnecting"))
        assert answer.criterion == "similarity" and answer.criterion_value == pytest.approx(
            answer.scores[0].similarity
        )
    finally:
        stub.DeleteRouter(pb.DeleteRouterRequest(name="helpdesk-old"))
    for bad, words in (
        ({"threshold": 3.0}, "[-1, 1] (similarity units"),
        ({"criterion": "calibrated", "threshold": 80}, "[-10, 20] (criterion 'calibrated')"),
        ({"criterion": "margin"}, "allowed: calibrated, similarity"),
        ({"context": "everything"}, "allowed: latest_turn, conversation"),
    ):
        with pytest.raises(grpc.RpcError) as info:
            stub.CreateRouter(
                pb.CreateRouterRequest(router=router({**DEFINITION, "name": "helpdesk-bad", **bad}))
            )
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details()
