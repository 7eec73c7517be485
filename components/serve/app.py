"""An OpenAI-compatible FastAPI app for one preloaded model: transformers' `serve` app (its chat and
completion handlers, request-id middleware, generation thread), narrowed to what homegrown serves.

What is added around transformers' handlers, and why:
- The model is known by one name (SERVED: the MODEL_URI or --model-name); `model` naming another
  answers 404 naming the served one (transformers answers 400, or tries to load the name).
- GET /v1/models lists exactly that model (transformers lists the Hugging Face cache, 500 without one).
- A prompt that leaves no room in the context answers 400 with both lengths (transformers generates
  past the context); without max_tokens a reply may take the rest of the context, and a prompt plus
  max_tokens over it answers 400 as OpenAI does.
- Stop sequences end the text before them, as OpenAI's do (transformers' stop_strings keep them),
  streamed text held back only while it could still be the start of one.
- A temperature above 0 samples (seeded by `seed`), as OpenAI's does; without one, decoding
  follows the model's generation config (greedy for homegrown's models).
- Errors have OpenAI's shape, {"error": {"message", "type", "code"}}; a body that is not JSON is a 400.
- /v1/chat/completions needs a chat template (400 otherwise): the model's own, applied by transformers.
- GET /health/live and /health/ready (and transformers' /health). transformers' /load_model, /reset,
  /v1/responses, /v1/systemone and /v1/audio/transcriptions are not routed.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from transformers.cli.serving.chat_completion import ChatCompletionHandler
from transformers.cli.serving.completion import CompletionHandler
from transformers.cli.serving.model_manager import ModelManager
from transformers.cli.serving.server import build_server
from transformers.cli.serving.utils import GenerationState

from components.hf_model import context_length

_RELAYS: set[asyncio.Task] = set()
ROUTED = {"/v1/chat/completions", "/v1/completions"}  # transformers' routes kept as they are


class _Served:
    """Mixin for transformers' handlers: the one served model, context limits, OpenAI's stop semantics."""

    served: str
    context: int

    def _resolve_model(self, body: dict) -> tuple[str, Any, Any]:
        requested = body.get("model")
        if requested is not None and requested != self.served:
            raise HTTPException(404, f"model {requested!r} is not served here; this server serves {self.served!r}")
        model, processor = self.model_manager.load_model_and_processor(
            self.model_manager.process_model_name(self.model_manager.force_model))
        return self.served, model, processor

    def _build_generation_config(self, body: dict, model_generation_config: Any, use_cb: bool = False) -> Any:
        config = super()._build_generation_config(body, model_generation_config, use_cb=use_cb)
        if (body.get("temperature") or 0) > 0:
            config.do_sample = True  # OpenAI's meaning (transformers samples only when the model's config does)
        if body.get("max_tokens") is None and body.get("max_completion_tokens") is None:
            config.max_new_tokens = None  # the rest of the context, set once the prompt's length is known
        stops = [config.stop_strings] if isinstance(config.stop_strings, str) else config.stop_strings or []
        config.stop_strings = [stop for stop in stops if stop] or None  # an empty stop would end every reply at once
        return config

    def _fit(self, inputs: dict, config: Any) -> None:
        prompt = inputs["input_ids"].shape[-1]
        if prompt >= self.context:
            raise HTTPException(400, f"the prompt is {prompt} tokens and the model's context is {self.context} "
                                     "tokens, which leaves no room for a reply: shorten the prompt")  # fmt: skip
        if config.max_new_tokens is None:
            config.max_new_tokens = self.context - prompt
        elif (total := prompt + config.max_new_tokens) > self.context:
            raise HTTPException(400, f"the model's context is {self.context} tokens, and {total} were requested "
                                     f"({prompt} in the prompt, max_tokens {config.max_new_tokens}): "
                                     "shorten the prompt or lower max_tokens")  # fmt: skip

    def _streaming(self, request_id, model, processor, model_id, inputs, gen_config, gen_manager, *args, **kwargs):
        self._fit(inputs, gen_config)
        manager = _StopAtStrings(gen_manager, gen_config.stop_strings) if gen_config.stop_strings else gen_manager
        return super()._streaming(request_id, model, processor, model_id, inputs, gen_config, manager, *args, **kwargs)

    async def _non_streaming(self, request_id, model, processor, model_id, inputs, gen_config, gen_manager, *args,
                             **kwargs):  # fmt: skip
        self._fit(inputs, gen_config)
        manager = _StopAtStrings(gen_manager, gen_config.stop_strings) if gen_config.stop_strings else gen_manager
        return await super()._non_streaming(request_id, model, processor, model_id, inputs, gen_config, manager,
                                            *args, **kwargs)  # fmt: skip


class _Chat(_Served, ChatCompletionHandler):
    async def handle_request(self, body: dict, request_id: str):
        _, _, processor = self._resolve_model(dict(body))
        if not getattr(getattr(processor, "tokenizer", processor), "chat_template", None):
            raise HTTPException(400, f"{self.served} has no chat template (a base model): use /v1/completions")
        return await super().handle_request(body, request_id)


class _Completion(_Served, CompletionHandler):
    pass


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """(text before the earliest stop string, whether one was found)."""
    found = [i for i in (text.find(stop) for stop in stops) if i >= 0]
    return (text[: min(found)], True) if found else (text, False)


def held_back(text: str, stops: list[str]) -> int:
    """How many characters at the end of text could begin a stop string."""
    return max((n for stop in stops for n in range(1, len(stop)) if text.endswith(stop[:n])), default=0)


class _StopAtStrings:
    """A transformers generation manager whose text ends before the first stop string (generation itself
    stops there through the generation config's stop_strings)."""

    def __init__(self, manager: Any, stops: list[str]) -> None:
        self.manager, self.stops = manager, stops

    async def generate_non_streaming(self, *args, **kwargs):
        text, input_len, generated_ids = await self.manager.generate_non_streaming(*args, **kwargs)
        return cut_at_stop(text, self.stops)[0], input_len, generated_ids

    def generate_streaming(self, *args, **kwargs):
        source, streamer = self.manager.generate_streaming(*args, **kwargs)
        out: asyncio.Queue = asyncio.Queue()

        async def relay() -> None:
            pending, stopped = "", False
            while (item := await source.get()) is not None:
                if not isinstance(item, str) or stopped:  # errors pass; text after a stop is dropped
                    if not stopped:
                        out.put_nowait(item)
                    continue
                pending, stopped = cut_at_stop(pending + item, self.stops)
                keep = 0 if stopped else held_back(pending, self.stops)
                if pending[: len(pending) - keep]:
                    out.put_nowait(pending[: len(pending) - keep])
                pending = pending[len(pending) - keep:]
            if pending and not stopped:
                out.put_nowait(pending)
            out.put_nowait(None)

        task = asyncio.get_running_loop().create_task(relay())
        _RELAYS.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(_RELAYS.discard)
        return out, streamer


def _error(status: int, message: str) -> JSONResponse:
    kind = "not_found_error" if status == 404 else "invalid_request_error" if status < 500 else "server_error"
    return JSONResponse({"error": {"message": message, "type": kind, "code": status}}, status_code=status)


def build_app(model_dir: Path, served: str) -> FastAPI:
    """The app serving model_dir (a Hugging Face model directory) on the CPU as `served`; the model is
    loaded (fp32) before this returns. Raises what from_pretrained raises for a broken directory."""
    manager = ModelManager(device="cpu", dtype="float32", force_model=str(model_dir))
    state = GenerationState(continuous_batching=False, compile=False)
    model, _ = manager.load_model_and_processor(manager.process_model_name(str(model_dir)))
    handlers = []
    for cls in (_Chat, _Completion):
        handler = cls(model_manager=manager, generation_state=state)
        handler.served, handler.context = served, context_length(model)
        handlers.append(handler)
    app = build_server(manager, handlers[0], handlers[1], None, None, None, state)  # type: ignore[arg-type]
    app.router.routes[:] = [r for r in app.router.routes if getattr(r, "path", None) in ROUTED or
                            not getattr(r, "path", "/").startswith(("/v1", "/load_model", "/reset"))]  # fmt: skip
    created = int(time.time())

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": served, "object": "model", "created": created,
                                            "owned_by": "homegrown"}]}  # fmt: skip

    @app.get("/health/live")
    def live() -> dict:
        return {"status": "alive"}

    @app.get("/health/ready")
    def ready() -> JSONResponse:
        loaded = bool(manager.loaded_models)
        return JSONResponse({"status": "ready" if loaded else "not ready", "model": served}, 200 if loaded else 503)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        problems = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
        return _error(400, f"the request body is not a JSON object: {problems}")

    return app
