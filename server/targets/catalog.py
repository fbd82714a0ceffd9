"""The model catalogue: every model a router may name, its price, context length and where it is
served (its pool). Validated in full at start; a model without a pool can be routed to (Route answers
it) but not called through Chat or /v1/chat/completions.

    pools:
      local:                      # vLLM servers on this host, attached by URL and/or launched
        kind: vllm
        endpoints: [http://127.0.0.1:8000/v1]
      provider:                   # a remote OpenAI-compatible serverless endpoint
        kind: openai
        base_url: https://inference.example.com/v1
        api_key_env: PROVIDER_API_KEY   # the key's environment variable, never the key
    models:
      llama-3.1-8b-instruct:
        pool: provider
        upstream: meta-llama/Llama-3.1-8B-Instruct   # the name the pool knows it by (default: same)
        input_price_per_mtok: 0.10                   # USD per million tokens
        output_price_per_mtok: 0.10
        context_tokens: 131072
        latency_ms: 180                              # prior time to first token, until measured
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


class _Strict(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LaunchSpec(_Strict):
    """One `vllm serve` process the service starts, watches and stops."""

    model: str = Field(description="Model path (or hub name) given to `vllm serve`.")
    port: int = Field(ge=1, le=65535, description="Port the replica listens on (127.0.0.1).")
    served_model_name: str | None = Field(None, description="--served-model-name; default: model.")
    args: tuple[str, ...] = Field((), description="Extra `vllm serve` arguments, e.g. --dtype float32.")


class VllmPoolSpec(_Strict):
    kind: Literal["vllm"]
    endpoints: tuple[str, ...] = Field((), description="Base URLs (…/v1) of running vLLM servers.")
    launch: tuple[LaunchSpec, ...] = Field((), description="Replicas the service launches itself.")
    command: tuple[str, ...] = Field(
        ("vllm", "serve"),
        min_length=1,
        description="How to start a replica, before the model and flags: e.g. "
        "[/opt/vllm-env/bin/vllm, serve] when vLLM lives in its own virtual environment.",
    )
    model_flag: str | None = Field(
        None,
        description="None passes the model as `vllm serve` wants it (positional); '--model' for entry "
        "points that take a flag (python -m vllm.entrypoints.openai.api_server).",
    )
    env: Mapping[str, str] = Field({}, description="Extra environment for launched replicas.")
    startup_timeout_s: float = Field(600.0, gt=0, description="Longest wait for a launched replica.")

    @model_validator(mode="after")
    def _has_replicas(self) -> VllmPoolSpec:
        if not self.endpoints and not self.launch:
            raise ValueError("a vllm pool needs endpoints (running servers) or launch (replicas to start)")
        return self


class OpenAIPoolSpec(_Strict):
    kind: Literal["openai"]
    base_url: str = Field(description="The provider's OpenAI-compatible base URL, ending in /v1.")
    api_key_env: str | None = Field(
        None, pattern=ENV_NAME, description="Environment variable holding the API key (never the key)."
    )


PoolSpec = Annotated[VllmPoolSpec | OpenAIPoolSpec, Field(discriminator="kind")]


class ModelInfo(_Strict):
    name: str = ""
    pool: str | None = Field(None, description="Pool that serves it; unset = routable, not callable.")
    upstream: str | None = Field(None, description="Model name at the pool; default: the catalogue name.")
    input_price_per_mtok: float = Field(ge=0)
    output_price_per_mtok: float = Field(ge=0)
    context_tokens: int = Field(8192, gt=0, description="Prompt plus completion tokens the model accepts.")
    latency_ms: float | None = Field(
        None, gt=0, description="Prior time to first token, used by prefer: fastest until measured."
    )

    @property
    def upstream_name(self) -> str:
        return self.upstream or self.name

    def cost_usd(self, input_tokens: float, output_tokens: float) -> float:
        return (input_tokens * self.input_price_per_mtok + output_tokens * self.output_price_per_mtok) / 1e6


class Catalog(_Strict):
    pools: Mapping[str, PoolSpec] = {}
    models: Mapping[str, ModelInfo]

    @model_validator(mode="after")
    def _check(self) -> Catalog:
        if not self.models:
            raise ValueError("models is empty; list at least one model")
        for name, info in self.models.items():
            if info.pool is not None and info.pool not in self.pools:
                known = ", ".join(sorted(self.pools)) or "none"
                raise ValueError(f"model {name!r} names unknown pool {info.pool!r}; pools: {known}")
        # Each entry knows its own name, so callers can pass ModelInfo around alone.
        object.__setattr__(
            self, "models", {n: m.model_copy(update={"name": n}) for n, m in self.models.items()}
        )
        return self

    def known(self) -> str:
        return ", ".join(sorted(self.models))


def load_catalog(path: Path) -> Catalog:
    """Read and validate the catalogue YAML; errors name the file and the offending field."""
    try:
        raw = yaml.safe_load(path.read_text()) or {}
        return Catalog.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'catalog'}: {e['msg']}" for e in exc.errors()
        )
        raise ValueError(f"{path}: {problems}") from exc
    except (OSError, yaml.YAMLError) as exc:
        raise ValueError(f"{path}: {exc}") from exc
