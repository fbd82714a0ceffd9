"""The service's one typed config object, and the only place that reads env vars, flags and config files.

Precedence: defaults < config file (--config FILE, YAML) < environment (TASKROUTER_SECTION__FIELD)
< command-line flags.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
MiB = 1024 * 1024


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerSection(_Section):
    host: str = Field("127.0.0.1", description="Interface to listen on; 0.0.0.0 to accept remote callers.")
    port: int = Field(50051, ge=0, le=65535, description="TCP port; 0 picks a free one (tests).")
    workers: int = Field(
        1,
        ge=1,
        description="Server processes sharing the gRPC and HTTP ports (SO_REUSEPORT; the kernel spreads "
        "connections). Each loads its own model; more than one pays when one Python process cannot keep "
        "the cores busy (CPU serving with many cores). model.threads defaults to cores / workers.",
    )
    max_message_bytes: int = Field(
        16 * MiB,
        gt=0,
        description="gRPC message size limit. Above limits.max_prompt_bytes so an oversize prompt gets "
        "a message naming the prompt limit instead of a transport error.",
    )


class ModelSection(_Section):
    checkpoint: Path | None = Field(
        None, description="Classifier checkpoint directory; unset = the one shipped in models/."
    )
    device: str = Field("auto", description="'auto' (CUDA when present, else CPU), 'cpu', 'cuda', 'cuda:N'.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="'auto' = float16 on CUDA (half the memory traffic), float32 on CPU."
    )
    backend: Literal["auto", "torch", "onnx", "onnx-int8"] = Field(
        "auto",
        description="'auto' = torch on CUDA; on CPU ONNX Runtime with int8 MatMuls when onnxruntime is "
        "installed (about 3x faster than torch, scores within the tested tolerance), else torch. 'torch' is "
        "the reference path; 'onnx' is ONNX Runtime in fp32.",
    )
    threads: int = Field(
        0,
        ge=0,
        description="Intra-op threads of the model on CPU; 0 = one per core. Set cores / workers when "
        "several worker processes share a host.",
    )
    cuda_graphs: bool = Field(
        True,
        description="On CUDA with torch: capture the encoder as CUDA graphs per (batch, length) bucket "
        "at warm-up and replay them (a lone request is launch-bound without). Falls back to eager if "
        "capture fails.",
    )
    spin: bool = Field(
        True,
        description="ONNX Runtime's pool threads spin between ops instead of sleeping: a lone request "
        "runs about a third faster (no thread wake-up per op), for some CPU burnt right after each batch. "
        "Turn off when other busy processes share the cores.",
    )
    onnx_cache_dir: Path | None = Field(
        None, description="Where exported ONNX encoders are kept; unset = $XDG_CACHE_HOME/taskrouter/onnx."
    )
    warmup: bool = Field(
        True,
        description="Run dummy batches before reporting SERVING, so the first "
        "real request does not pay for lazy initialisation.",
    )


class BatchingSection(_Section):
    max_batch_requests: int = Field(64, gt=0, description="Most requests in one encoder pass.")
    max_batch_tokens: int = Field(
        16384, gt=0, description="Most prompt tokens in one pass (sum of lengths); bounds activation memory."
    )
    max_queued_requests: int = Field(
        1024,
        gt=0,
        description="Admission bound: requests waiting or running. Past it callers get "
        "RESOURCE_EXHAUSTED at once instead of joining an ever-growing queue.",
    )

    max_queue_ms: float = Field(
        2000.0,
        ge=0,
        description="Admission by expected wait: a request that would wait longer than this behind the "
        "work ahead of it (queued tokens and batches plus the running batch, at the cost recent batches "
        "measured; its own size never counts, so an idle server admits anything) gets RESOURCE_EXHAUSTED "
        "at once, which bounds latency at saturation where a count alone cannot. 0 turns it off.",
    )


class LimitsSection(_Section):
    max_prompt_bytes: int = Field(
        1 * MiB,
        gt=0,
        description="Most UTF-8 bytes of content in one request; the encoder reads only "
        "its token budget, so more is almost surely a mistake.",
    )
    max_messages: int = Field(1024, gt=0, description="Most messages in one request.")
    max_batch_inputs: int = Field(512, gt=0, description="Most requests in one ClassifyBatch call.")


class RoutersSection(_Section):
    dir: Path | None = Field(
        DEFAULTS_DIR / "routers",
        description="Directory of router definitions (*.yaml, *.yml, *.json) loaded at start; "
        "None starts with no routers.",
    )
    catalog: Path = Field(
        DEFAULTS_DIR / "catalog.yaml",
        description="Model catalogue: prices, context lengths, latency priors, and the pools that serve "
        "each model (server/targets/catalog.py documents the format).",
    )

    store: Literal["file", "redis"] = Field(
        "file",
        description="Where routers made over the APIs live: `file` (state_file, shared by the workers of "
        "one server) or `redis` (shared by every replica; state_file unused). Seeded from `dir` once.",
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Used when store is redis.")
    redis_key: str = Field(
        "taskrouter:routers", description="Key prefix in Redis: <key>:doc, <key>:rev, <key>:changed."
    )
    state_file: Path | None = Field(
        None,
        description="JSON file that keeps the routers created, changed or deleted over the APIs across "
        "restarts (rewritten atomically after every change). Its first start is seeded from `dir`; "
        "afterwards the file is what the routers are. The workers of one server share it (server.workers > 1 "
        "uses a temporary one when unset). Unset: API changes last until the process ends.",
    )


class HttpSection(_Section):
    host: str = Field("127.0.0.1", description="Interface of the OpenAI-compatible and control-plane API.")
    port: int | None = Field(
        8080, ge=0, le=65535, description="HTTP port; 0 picks a free one (tests); None turns HTTP off."
    )
    max_body_bytes: int = Field(
        8 * MiB,
        gt=0,
        description="Largest request body (413 past it, refused before it is read): a conversation at "
        "limits.max_prompt_bytes or a console Evaluate file of 5000 rows fits.",
    )
    body_timeout_s: float = Field(30.0, gt=0, description="A request body must arrive within this (408).")
    header_timeout_s: float = Field(
        10.0,
        gt=0,
        description="A request's headers must be complete this long after its first byte (or after the "
        "connection opened); otherwise the connection is closed. Bounds half-sent and silent clients.",
    )
    keep_alive_s: int = Field(5, gt=0, description="An idle keep-alive connection is closed after this.")
    max_connections: int = Field(
        1024, gt=0, description="Open HTTP connections at most; past it a new one gets 503 and is closed."
    )


class TargetsSection(_Section):
    connect_timeout_s: float = Field(2.0, gt=0, description="TCP connect to a model endpoint.")
    first_token_timeout_s: float = Field(
        30.0,
        gt=0,
        description="Until a streamed answer's first event, or a whole non-streamed answer; past it "
        "the next candidate is tried (nothing has reached the caller yet).",
    )
    read_timeout_s: float = Field(60.0, gt=0, description="Longest silence inside a streamed answer.")
    health_interval_s: float = Field(5.0, gt=0, description="How often every endpoint's health is probed.")
    breaker_failures: int = Field(3, gt=0, description="Consecutive failures that take an endpoint out.")
    breaker_open_s: float = Field(
        5.0, gt=0, description="First back-off before one trial request; doubles per failed trial."
    )
    latency_alpha: float = Field(
        0.2, gt=0, le=1, description="Weight of the newest sample in the measured-latency moving average."
    )
    default_output_tokens: int = Field(
        256, gt=0, description="Completion length assumed for cost estimates when max_tokens is unset."
    )
    max_connections: int = Field(512, gt=0, description="Open HTTP connections to all endpoints together.")


class AffinitySection(_Section):
    store: Literal["memory", "redis"] = Field(
        "memory", description="Where pins live: this process, or Redis shared by every replica."
    )
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Used when store is redis.")
    ttl_s: float = Field(1800.0, gt=0, description="A pin expires after this long without a request.")
    max_keys: int = Field(100_000, gt=0, description="Memory store: most pins kept (least recent go first).")


class AuthSection(_Section):
    admin_token_env: str | None = Field(
        None,
        description="Name of the environment variable holding the admin token. When set, router "
        "management (gRPC CreateRouter/UpdateRouter/GetRouter/ListRouters/DeleteRouter and the HTTP "
        "/v2 control plane) needs `authorization: Bearer <token>`. The token itself is never in config.",
    )
    inference_token_env: str | None = Field(
        None,
        description="Name of the environment variable holding the inference token. When set, Classify, "
        "ClassifyBatch, Route, Chat and the OpenAI-compatible endpoints need it (or the admin token).",
    )


class TlsSection(_Section):
    cert_file: Path | None = Field(
        None, description="PEM certificate (chain) for gRPC and HTTP; with key_file, both serve TLS only."
    )
    key_file: Path | None = Field(None, description="PEM private key of cert_file.")

    @model_validator(mode="after")
    def _pair(self) -> TlsSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("tls.cert_file and tls.key_file go together: set both or neither")
        for path in (self.cert_file, self.key_file):
            if path is not None and not path.is_file():
                raise ValueError(f"TLS file {path} does not exist")
        return self


class TelemetrySection(_Section):
    metrics: bool = Field(
        True,
        description="Serve Prometheus metrics at GET /metrics on the HTTP port (open, like health). With "
        "server.workers > 1 every worker's series are in each scrape, labelled worker=<pid> (see "
        "metrics_dir).",
    )
    metrics_dir: Path | None = Field(
        None,
        description="Where each worker process leaves its metrics for the others, so that a scrape of any "
        "worker answers for all of them (series labelled worker=<pid>). server.workers > 1 sets a temporary "
        "directory when this is unset; set it only to choose where.",
    )
    request_log: Path | None = Field(
        None,
        description="JSONL file getting one line per request (router, task, model, outcome, latencies, "
        "tokens, cost), the input of `taskrouter-analyze`. Unset: no log.",
    )
    log_prompts: bool = Field(
        False,
        description="Also write each request's messages to the request log. Off by default: prompts are "
        "customer data, and the report needs none of them.",
    )
    stall_after_s: float = Field(
        10.0,
        gt=0,
        description="A classifier batch running longer than this marks the classifier stalled: health "
        "turns NOT_SERVING and taskrouter_classifier_stalled is 1 until a batch completes. A healthy "
        "batch takes milliseconds; this is for a hung device or thread.",
    )
    stall_failed_batches: int = Field(
        3,
        gt=0,
        description="This many failed classifier batches in a row also mark it stalled, so a broken "
        "model shows as an alarm rather than as fast errors.",
    )


class Config(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="TASKROUTER_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    server: ServerSection = ServerSection()
    model: ModelSection = ModelSection()
    batching: BatchingSection = BatchingSection()
    limits: LimitsSection = LimitsSection()
    routers: RoutersSection = RoutersSection()
    http: HttpSection = HttpSection()
    targets: TargetsSection = TargetsSection()
    affinity: AffinitySection = AffinitySection()
    auth: AuthSection = AuthSection()
    tls: TlsSection = TlsSection()
    telemetry: TelemetrySection = TelemetrySection()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @model_validator(mode="after")
    def _cross_checks(self) -> Config:
        if self.server.max_message_bytes <= self.limits.max_prompt_bytes:
            raise ValueError(
                f"server.max_message_bytes={self.server.max_message_bytes} must exceed "
                f"limits.max_prompt_bytes={self.limits.max_prompt_bytes}"
            )
        if self.batching.max_queued_requests < self.batching.max_batch_requests:
            raise ValueError(
                f"batching.max_queued_requests={self.batching.max_queued_requests} must be >= "
                f"batching.max_batch_requests={self.batching.max_batch_requests}"
            )
        return self


def env_secret(name: str | None) -> str | None:
    """A secret named by its environment variable (API keys are never written in config files)."""
    return os.environ.get(name) if name else None


def _flag_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="taskrouter-serve", description="Run the taskrouter gRPC service.")
    parser.add_argument("--config", type=Path, help="YAML config file (sections as in server/config.py)")
    parser.add_argument("--host", dest="server.host")
    parser.add_argument("--port", dest="server.port", type=int)
    parser.add_argument("--http-host", dest="http.host")
    parser.add_argument("--http-port", dest="http.port", type=int)
    parser.add_argument("--workers", dest="server.workers", type=int)
    parser.add_argument("--catalog", dest="routers.catalog", type=Path)
    parser.add_argument("--checkpoint", dest="model.checkpoint", type=Path)
    parser.add_argument("--device", dest="model.device")
    parser.add_argument("--routers-dir", dest="routers.dir", type=Path)
    parser.add_argument("--state-file", dest="routers.state_file", type=Path)
    parser.add_argument("--request-log", dest="telemetry.request_log", type=Path)
    parser.add_argument("--log-level", dest="log_level")
    return parser


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'server.port': 1} -> {'server': {'port': 1}}, dropping flags that were not given."""
    nested: dict[str, Any] = {}
    for dotted, value in flat.items():
        if value is None:
            continue
        *parents, leaf = dotted.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def load_config(argv: Sequence[str] | None = None, **overrides: Any) -> Config:
    """Build the Config from flags (argv), environment and an optional --config file.

    `overrides` (nested dicts, highest precedence) let tests and embedders set values directly.
    """
    flags = vars(_flag_parser().parse_args(argv))
    config_file = flags.pop("config")
    cli = _nest(flags)
    for section, values in overrides.items():
        cli[section] = {**cli.get(section, {}), **values} if isinstance(values, dict) else values

    class _Sources(Config):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            sources: list[PydanticBaseSettingsSource] = [
                InitSettingsSource(settings_cls, init_kwargs=cli),
                env_settings,
            ]
            if config_file is not None:
                if not config_file.is_file():
                    raise ValueError(f"config file {config_file} does not exist")
                sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=config_file))
            return tuple(sources)

    return Config.model_validate(_Sources().model_dump())
