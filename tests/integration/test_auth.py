"""Tokens from the environment guard router management (admin) and inference, over gRPC and HTTP; health
stays open; a wrong or missing token gets a clear status; no token ever reaches the log."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from taskrouter.v1 import taskrouter_pb2 as pb
from tests.conftest import ServerThread, make_config
from tests.integration.test_router_crud import DEFINITION, router

ADMIN, INFERENCE = "admin-secret-7f3a", "inference-secret-91bc"
ENV = {"TR_TEST_ADMIN_TOKEN": ADMIN, "TR_TEST_INFERENCE_TOKEN": INFERENCE}


@pytest.fixture(scope="module")
def guarded() -> Iterator[ServerThread]:
    saved = {k: os.environ.get(k) for k in ENV}
    os.environ.update(ENV)
    cfg = make_config(
        auth={"admin_token_env": "TR_TEST_ADMIN_TOKEN", "inference_token_env": "TR_TEST_INFERENCE_TOKEN"}
    )
    served = ServerThread(cfg).load()
    yield served
    served.stop()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


def code_of(call: object, request: object, metadata: object = None) -> tuple[grpc.StatusCode, str]:
    try:
        call(request, metadata=metadata)  # type: ignore[operator]
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def test_grpc_admin_calls_need_the_admin_token(
    guarded: ServerThread, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    stub, create = guarded.stub, pb.CreateRouterRequest(router=router(DEFINITION))
    code, details = code_of(stub.CreateRouter, create)
    assert code == grpc.StatusCode.UNAUTHENTICATED and "authorization: Bearer <token>" in details
    assert (
        code_of(stub.ListRouters, pb.ListRoutersRequest(), bearer("guess"))[0]
        == grpc.StatusCode.UNAUTHENTICATED
    )
    code, details = code_of(stub.CreateRouter, create, bearer(INFERENCE))
    assert code == grpc.StatusCode.PERMISSION_DENIED and "needs the admin token" in details
    assert code_of(stub.CreateRouter, create, bearer(ADMIN))[0] == grpc.StatusCode.OK
    assert code_of(stub.DeleteRouter, pb.DeleteRouterRequest(name=DEFINITION["name"]), bearer(ADMIN))[0] == (
        grpc.StatusCode.OK
    )
    assert ADMIN not in caplog.text and INFERENCE not in caplog.text


def test_grpc_inference_needs_a_token_and_health_stays_open(guarded: ServerThread) -> None:
    stub, request = guarded.stub, pb.ClassifyRequest(router="support", prompt="refund my order")
    assert code_of(stub.Classify, request)[0] == grpc.StatusCode.UNAUTHENTICATED
    assert code_of(stub.Classify, request, bearer(INFERENCE))[0] == grpc.StatusCode.OK
    assert code_of(stub.Classify, request, bearer(ADMIN))[0] == grpc.StatusCode.OK  # admin may do both
    chat = stub.Chat(pb.ChatRequest(model="router:support", prompt="hi"))
    with pytest.raises(grpc.RpcError) as info:  # a streaming call is guarded the same way
        next(iter(chat))
    assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    health = health_pb2_grpc.HealthStub(guarded.channel).Check(health_pb2.HealthCheckRequest())
    assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_http_answers_401_and_403_in_each_api_shape(guarded: ServerThread) -> None:
    base = f"http://127.0.0.1:{guarded.http_port}"
    with httpx.Client(base_url=base, timeout=30) as client:
        missing = client.post("/v2/gen-ai/models/routers", json=DEFINITION)
        assert missing.status_code == 401 and missing.json()["id"] == "unauthenticated"
        wrong = client.get("/v2/gen-ai/models/routers", headers={"authorization": f"Bearer {INFERENCE}"})
        assert wrong.status_code == 403 and wrong.json()["id"] == "permission_denied"
        listed = client.get("/v2/gen-ai/models/routers", headers={"authorization": f"Bearer {ADMIN}"})
        assert listed.status_code == 200 and listed.json()["meta"]["total"] >= 2
        models = client.get("/v1/models")
        assert models.status_code == 401 and models.json()["error"]["type"] == "unauthenticated"
        assert client.get("/v1/models", headers={"authorization": f"Bearer {INFERENCE}"}).status_code == 200
        assert ADMIN not in missing.text + wrong.text and INFERENCE not in wrong.text + models.text


def test_a_token_variable_that_is_not_set_stops_start_up() -> None:
    os.environ.pop("TR_TEST_UNSET_TOKEN", None)
    with pytest.raises(
        ValueError, match=r"auth.admin_token_env names \$TR_TEST_UNSET_TOKEN, which is not set"
    ):
        ServerThread(make_config(auth={"admin_token_env": "TR_TEST_UNSET_TOKEN"}))
