"""A real OpenAI-compatible HTTP server on loopback that tests can tell to misbehave per model.

Not a mock of our code: it is the other side of the wire, speaking the protocol a serverless provider
speaks (`/v1/chat/completions` with and without SSE streaming, `/v1/models`, `/health`). Each model
name answers by its `mode`: ok, http500, http429, http400, slow (sleeps `slow_s` first), drop (one
chunk, then the connection breaks), garbage (a stream that ends without [DONE] before any event),
tools (as vLLM started with --enable-auto-tool-choice: a request with tools gets a call to its first
tool, finish_reason tool_calls; streamed, the name in the first delta and the arguments in pieces),
no-tool-parser (as vLLM started without it: a request with tools gets vLLM's 400)."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import uvicorn
import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

WORDS = ["Hello", " from", " the", " fake", " model", "."]
# Prompts for the demo router's tasks (math, poem) and one that matches neither (fallback).
MATH = "What is 17 multiplied by 23? Show the arithmetic."
POEM = "Write a short poem about the autumn sea."
OFF_TOPIC = "Which train goes from Berlin to Hamburg tonight?"
KEY_ENV = "TASKROUTER_TEST_KEY"


def write_demo_config(root: Path, fake: FakeOpenAI, closed_port: int) -> tuple[Path, Path]:
    """A catalogue whose models live on `fake` (one behind a refused port) and a router `demo` with a
    cheapest-first math pool, a list-order poem pool and a fallback model.
    Returns (routers dir, catalogue)."""
    price = {"input_price_per_mtok": 1.0, "output_price_per_mtok": 1.0, "context_tokens": 4096}
    catalog = {
        "pools": {
            "remote": {"kind": "openai", "base_url": fake.base_url, "api_key_env": KEY_ENV},
            "gone": {"kind": "openai", "base_url": f"http://127.0.0.1:{closed_port}/v1"},
        },
        "models": {
            "cheap": {**price, "pool": "remote", "upstream": "vendor/cheap-7b", "input_price_per_mtok": 0.1},
            "strong": {**price, "pool": "remote", "input_price_per_mtok": 5.0, "output_price_per_mtok": 15.0},
            "backup": {**price, "pool": "remote"},
            "refused": {**price, "pool": "gone"},
            "spare": {**price, "pool": "remote"},
            "routing-only": price,
        },
    }
    (root / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    routers = root / "routers"
    routers.mkdir()
    router = {
        "name": "demo",
        "description": "test router",
        "threshold": 0.2,
        "policies": [
            {
                "custom_task": {"name": "math", "description": "Solve a math or arithmetic problem."},
                "models": ["strong", "cheap"],
                "selection_policy": {"prefer": "cheapest"},
            },
            {
                "custom_task": {"name": "poem", "description": "Write a poem or other creative writing."},
                "models": ["refused", "backup", "strong"],
            },
        ],
        "fallback_models": ["spare"],
    }
    (routers / "demo.yaml").write_text(yaml.safe_dump(router))
    return routers, root / "catalog.yaml"


class FakeOpenAI:
    def __init__(self) -> None:
        self.modes: dict[str, str] = {}
        self.calls: Counter[str] = Counter()
        self.bodies: list[dict[str, Any]] = []
        self.auth: list[str | None] = []
        self.slow_s = 3.0
        self.healthy = True
        self._sock = socket.create_server(("127.0.0.1", 0))
        # As in server/main.py: without it every keep-alive response waits 40 ms for a delayed ACK.
        self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.port = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(self._app(), log_level="error", lifespan="off")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=lambda: asyncio.run(self._server.serve(sockets=[self._sock])), daemon=True
        )

    def start(self) -> FakeOpenAI:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def reset(self) -> None:
        self.modes.clear()
        self.calls.clear()
        self.bodies.clear()
        self.auth.clear()
        self.healthy = True

    def _app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/health")
        async def health() -> Any:
            return JSONResponse({}, status_code=200 if self.healthy else 503)

        @app.get("/v1/models")
        async def models() -> Any:
            if not self.healthy:
                return JSONResponse({"error": {"message": "down"}}, status_code=503)
            return {"object": "list", "data": [{"id": m, "object": "model"} for m in self.modes]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> Any:
            body = await request.json()
            model = body["model"]
            self.calls[model] += 1
            self.bodies.append(body)
            self.auth.append(request.headers.get("authorization"))
            mode = self.modes.get(model, "ok")
            if mode == "http500":
                return JSONResponse({"error": {"message": "boom", "type": "server_error"}}, status_code=500)
            if mode == "http429":
                return JSONResponse(
                    {"error": {"message": "slow down", "type": "rate_limit"}}, status_code=429
                )
            if mode == "http400":
                return JSONResponse({"error": {"message": "bad request", "type": "invalid"}}, status_code=400)
            if mode == "no-tool-parser" and body.get("tools") and body.get("tool_choice", "auto") == "auto":
                message = (
                    '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set'
                )
                return JSONResponse(
                    {"object": "error", "message": message, "type": "BadRequestError", "code": 400},
                    status_code=400,
                )
            if mode == "slow":
                await asyncio.sleep(self.slow_s)
            if body.get("stream"):
                return StreamingResponse(self._events(body, mode), media_type="text/event-stream")
            return self._completion(body, mode)

        return app

    @staticmethod
    def _usage(body: dict[str, Any]) -> dict[str, int]:
        prompt = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
        return {"prompt_tokens": prompt, "completion_tokens": len(WORDS), "total_tokens": prompt + len(WORDS)}

    @staticmethod
    def _tool_call(body: dict[str, Any], mode: str) -> dict[str, Any] | None:
        if mode != "tools" or not body.get("tools") or body.get("tool_choice") == "none":
            return None
        name = body["tools"][0]["function"]["name"]
        return {
            "id": "call_fake",
            "type": "function",
            "function": {"name": name, "arguments": '{"path": "x.py"}'},
        }

    def _completion(self, body: dict[str, Any], mode: str = "ok") -> dict[str, Any]:
        call = self._tool_call(body, mode)
        if call is not None:
            message = {"role": "assistant", "content": None, "tool_calls": [call]}
            choice = {"index": 0, "message": message, "finish_reason": "tool_calls"}
            return {
                "id": "chatcmpl-fake",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [choice],
                "usage": self._usage(body),
            }
        return {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "".join(WORDS)},
                    "finish_reason": "stop",
                }
            ],
            "usage": self._usage(body),
        }

    async def _events(self, body: dict[str, Any], mode: str) -> AsyncIterator[bytes]:
        if mode == "garbage":
            yield b": nothing useful\n\n"
            return
        base = {
            "id": "chatcmpl-fake",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": body["model"],
        }
        call = self._tool_call(body, mode)
        if call is not None:
            head = {
                "index": 0,
                "id": call["id"],
                "type": "function",
                "function": {"name": call["function"]["name"], "arguments": ""},
            }
            for delta in (
                {"role": "assistant", "content": None, "tool_calls": [head]},
                {"tool_calls": [{"index": 0, "function": {"arguments": '{"path": '}}]},
                {"tool_calls": [{"index": 0, "function": {"arguments": '"x.py"}'}}]},
            ):
                chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
                yield f"data: {json.dumps(chunk)}\n\n".encode()
            last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}
            yield f"data: {json.dumps(last)}\n\n".encode()
            if (body.get("stream_options") or {}).get("include_usage"):
                yield f"data: {json.dumps({**base, 'choices': [], 'usage': self._usage(body)})}\n\n".encode()
            yield b"data: [DONE]\n\n"
            return
        for i, word in enumerate(WORDS):
            delta = {"role": "assistant", "content": word} if i == 0 else {"content": word}
            chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
            yield f"data: {json.dumps(chunk)}\n\n".encode()
            if mode == "drop":
                raise RuntimeError("connection dropped on purpose")
            await asyncio.sleep(0)
        last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
        yield f"data: {json.dumps(last)}\n\n".encode()
        if (body.get("stream_options") or {}).get("include_usage"):
            yield f"data: {json.dumps({**base, 'choices': [], 'usage': self._usage(body)})}\n\n".encode()
        yield b"data: [DONE]\n\n"
