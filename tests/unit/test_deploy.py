"""The deployment files cannot be built or applied here (no Docker, no cluster), so this checks what can
be checked without them: every file parses, the image's commands exist in the package and accept the
arguments the image and the Deployment give them, the ConfigMap's config, catalogue and routers load,
the Kubernetes objects point at each other correctly, and every metric a dashboard panel or alert
names is one the service exports."""

from __future__ import annotations

import importlib
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from server.config import load_config
from server.healthcheck import parser as healthcheck_parser
from server.routing.spec import parse_router
from server.targets import load_catalog
from server.telemetry.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "kubernetes"
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]


def k8s_objects() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert {"apiVersion", "kind", "metadata"} <= doc.keys(), f"{path.name}: not a Kubernetes object"
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (keyword, rest), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile.gpu").read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        keyword, _, rest = line.strip().partition(" ")
        if keyword == "FROM":
            current = stages.setdefault(rest.split(" AS ")[-1].strip(), [])
        current.append((keyword, rest.strip()))
    return stages


def entry_command(stage: list[tuple[str, str]], keyword: str) -> list[str]:
    rest = next(r for k, r in stage if k == keyword)
    return json.loads(rest[rest.index("[") :])


def script_of(executable: str) -> Any:
    """The function behind an installed console script, e.g. /opt/taskrouter/bin/taskrouter-serve."""
    name = Path(executable).name
    assert name in SCRIPTS, f"{executable}: no console script {name!r} in pyproject.toml"
    module, function = SCRIPTS[name].split(":")
    return getattr(importlib.import_module(module), function)


@pytest.fixture(scope="module")
def configmap_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The ConfigMap's files written where the Deployment mounts them, under a temporary root."""
    objects = k8s_objects()
    root = tmp_path_factory.mktemp("etc")
    files = {}
    for name, data in objects[("ConfigMap", "taskrouter-config")]["data"].items():
        files[name] = root / name
        files[name].write_text(data)
    (root / "routers").mkdir()
    for name, data in objects[("ConfigMap", "taskrouter-routers")]["data"].items():
        (root / "routers" / name).write_text(data)
    files["routers"] = root / "routers"
    return files


def test_every_deploy_file_parses() -> None:
    parsed = 0
    for path in sorted(DEPLOY.rglob("*")):
        if path.suffix in (".yaml", ".yml"):
            assert list(yaml.safe_load_all(path.read_text())), path
            parsed += 1
        elif path.suffix == ".json":
            json.loads(path.read_text())
            parsed += 1
    assert parsed >= 10
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert all((K8S / r).is_file() for r in kustomization["resources"])
    assert {p.name for p in K8S.glob("*.yaml")} == {*kustomization["resources"], "kustomization.yaml"}


def test_gpu_image_is_cuda_based_non_root_with_health_check_and_vllm() -> None:
    stages = dockerfile_stages()
    assert list(stages)[-1] == "gpu", "the GPU stage must be last: it is what a plain `docker build` makes"
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert "ARG CUDA_BASE=nvidia/cuda:" in text and "runtime" in text.split("ARG CUDA_BASE=")[1].split()[0]
    for name in ("gpu", "cpu"):
        stage = stages[name]
        users = [r for k, r in stage if k == "USER"]
        assert users and users[-1] not in ("root", "0"), f"{name}: runs as root"
        exposed = {p for k, r in stage if k == "EXPOSE" for p in r.split()}
        assert {"50051", "8080"} <= exposed
    assert any(k == "COPY" and "/opt/vllm" in r for k, r in stages["gpu"])
    assert any(k == "RUN" and "pip install vllm" in r for k, r in stages["build"])
    for keyword, rest in (i for s in stages.values() for i in s):
        if keyword == "COPY" and "--from" not in rest:
            sources = shlex.split(rest)[:-1]
            assert all((ROOT / s).exists() for s in sources), f"COPY {rest}: missing in the repository"


def test_image_commands_exist_and_accept_their_arguments(configmap_files: dict[str, Path]) -> None:
    deployment = k8s_objects()[("Deployment", "taskrouter")]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    for stage in dockerfile_stages().values():
        if not any(k == "ENTRYPOINT" for k, _ in stage):
            continue
        serve, *args = entry_command(stage, "ENTRYPOINT")
        assert callable(script_of(serve))
        # The Deployment's args come after the image's ENTRYPOINT, with the ConfigMap's config.
        given = [
            configmap_files["config.yaml"] if a == "/etc/taskrouter/config.yaml" else a
            for a in container["args"]
        ]
        cfg = load_config([*args, *map(str, given)])
        assert (cfg.server.host, cfg.server.port, cfg.http.host, cfg.http.port) == (
            "0.0.0.0",
            50051,
            "0.0.0.0",
            8080,
        )
        assert cfg.affinity.store == "redis" and "taskrouter-redis" in cfg.affinity.redis_url
        check, *check_args = entry_command(stage, "HEALTHCHECK")
        assert callable(script_of(check))
        assert healthcheck_parser().parse_args(check_args).port == 50051


def test_configmap_catalogue_and_routers_load(configmap_files: dict[str, Path]) -> None:
    catalog = load_catalog(configmap_files["catalog.yaml"])
    vllm = catalog.pools["local"]
    assert vllm.command[0] == "/opt/vllm/bin/vllm"  # the image's vLLM environment  # type: ignore[union-attr]
    routers = [
        parse_router(yaml.safe_load(p.read_text()), catalog) for p in configmap_files["routers"].iterdir()
    ]
    assert [r.name for r in routers] == ["helpdesk"]


def test_kubernetes_objects_point_at_each_other() -> None:
    objects = k8s_objects()
    deployment = objects[("Deployment", "taskrouter")]
    pod = deployment["spec"]["template"]
    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert objects[("Service", "taskrouter")]["spec"]["selector"].items() <= labels.items()
    assert (
        objects[("PodDisruptionBudget", "taskrouter")]["spec"]["selector"]["matchLabels"].items()
        <= labels.items()
    )
    target = objects[("HorizontalPodAutoscaler", "taskrouter")]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "taskrouter")
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == ports["grpc"] == 50051, probe  # the health service
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    assert all(m["name"] in volumes for m in container["volumeMounts"])
    for volume in volumes.values():
        if "configMap" in volume:
            assert ("ConfigMap", volume["configMap"]["name"]) in objects
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    service_ports = {p["targetPort"] for p in objects[("Service", "taskrouter")]["spec"]["ports"]}
    assert service_ports <= ports.keys()
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["http"])
    redis = objects[("Service", "taskrouter-redis")]
    assert (
        redis["spec"]["selector"].items()
        <= objects[("Deployment", "taskrouter-redis")]["spec"]["template"]["metadata"]["labels"].items()
    )


def exported_series() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",),
        }[family.type]
        names |= {family.name + s for s in suffixes}
    return names


def test_dashboard_and_alerts_use_only_exported_metrics() -> None:
    exported = exported_series()
    dashboard = json.loads((DEPLOY / "grafana" / "taskrouter-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "taskrouter-rules.yaml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {name for e in exprs for name in re.findall(r"taskrouter_\w+", e)}
    assert used and used <= exported, sorted(used - exported)
    # The panels the issue asks for are there.
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for word in (
        "match rate",
        "fallback rate",
        "tasks",
        "models",
        "latency",
        "batch size",
        "refused",
        "cost",
    ):
        assert word in titles, word
    assert any(r["alert"] == "TaskrouterClassifierStalled" for g in rules["groups"] for r in g["rules"])
