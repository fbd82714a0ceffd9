"""Routers made over the API survive a restart; a crash mid-write never leaves a damaged state file."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest

from server.config import DEFAULTS_DIR
from server.errors import InvalidInput
from server.routing.persistence import RouterState
from server.targets import load_catalog
from taskrouter.v1 import taskrouter_pb2 as pb
from tests.conftest import ServerThread, make_config
from tests.integration.test_router_crud import DEFINITION, router

ROOT = Path(__file__).resolve().parents[2]


def test_routers_made_over_the_api_survive_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "state" / "routers.json"
    cfg = make_config(routers={"state_file": str(state)})
    first = ServerThread(cfg).load()
    try:
        assert {r["definition"]["name"] for r in json.loads(state.read_text())["routers"]} == {
            "support",
            "coding-agent",
        }  # the first start saves what the router files seeded
        created = first.stub.CreateRouter(pb.CreateRouterRequest(router=router(DEFINITION)))
        support = first.stub.GetRouter(pb.GetRouterRequest(name="support"))
        support.description = "changed over the API"
        updated = first.stub.UpdateRouter(pb.UpdateRouterRequest(router=support))
        first.stub.DeleteRouter(pb.DeleteRouterRequest(name="coding-agent"))
    finally:
        first.stop()

    second = ServerThread(cfg).load()
    try:
        listed = {r.name: r for r in second.stub.ListRouters(pb.ListRoutersRequest()).routers}
        assert set(listed) == {"support", DEFINITION["name"]}  # the deleted default stays deleted
        assert listed[DEFINITION["name"]] == created  # uuid, version, times, definition: all kept
        assert listed["support"].description == "changed over the API"
        assert (listed["support"].version, listed["support"].uuid) == (2, updated.uuid)
        answer = second.stub.Classify(
            pb.ClassifyRequest(router=DEFINITION["name"], prompt="my vpn keeps disconnecting")
        )
        assert answer.task == "vpn"
    finally:
        second.stop()


def test_a_change_that_cannot_be_saved_is_not_applied(tmp_path: Path) -> None:
    state = tmp_path / "state" / "routers.json"
    served = ServerThread(make_config(routers={"state_file": str(state)})).load()
    try:
        shutil.rmtree(state.parent)
        state.parent.write_text("a file where the state directory was")  # every write now fails
        with pytest.raises(grpc.RpcError) as info:
            served.stub.CreateRouter(pb.CreateRouterRequest(router=router(DEFINITION)))
        assert info.value.code() == grpc.StatusCode.INTERNAL
        assert (
            "could not save routers" in info.value.details() and "nothing was changed" in info.value.details()
        )
        names = {r.name for r in served.stub.ListRouters(pb.ListRoutersRequest()).routers}
        assert DEFINITION["name"] not in names and "support" in names
    finally:
        served.stop()


WRITER = """
import itertools, json, sys
from pathlib import Path
from server.routing.persistence import write_atomic
path = Path(sys.argv[1])
docs = [json.dumps({"n": n, "pad": "x" * 400_000}).encode() for n in (1, 2)]
print("ready", flush=True)
for i in itertools.count():
    write_atomic(path, docs[i % 2])
"""


def test_a_crash_mid_write_leaves_the_old_or_the_new_file(tmp_path: Path) -> None:
    """A real writer process, killed with SIGKILL at arbitrary moments while it rewrites the file."""
    path = tmp_path / "routers.json"
    for delay in (0.05, 0.11, 0.17, 0.23, 0.31):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if path.exists():
            assert json.loads(path.read_text())["n"] in (1, 2)
    strays = list(tmp_path.glob(".routers.json.*.tmp"))
    path.write_text(json.dumps({"format": 1, "routers": []}))
    assert RouterState(path, load_catalog(DEFAULTS_DIR / "catalog.yaml")).load() == []
    assert not list(tmp_path.glob(".routers.json.*.tmp")), strays  # a start clears what crashes left


def test_a_damaged_state_file_stops_start_up_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "routers.json"
    catalog = load_catalog(DEFAULTS_DIR / "catalog.yaml")
    path.write_text('{"format": 1, "routers": [{"uuid": "x"')
    with pytest.raises(InvalidInput, match=f"router state file {path}"):
        RouterState(path, catalog).load()
    entry = {
        "uuid": "u",
        "version": 1,
        "create_time": 0.0,
        "definition": {**DEFINITION, "fallback_models": []},
    }
    path.write_text(json.dumps({"format": 1, "routers": [entry]}))
    with pytest.raises(InvalidInput, match="fallback"):
        RouterState(path, catalog).load()
