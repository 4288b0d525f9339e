"""The OpenAI-compatible HTTP API of the `llm` processor (the subset vLLM serves).

Routes: `GET /v1/models`, `POST /v1/chat/completions`, `POST /v1/completions` (both with
`stream: true` as server-sent events ending in `data: [DONE]`), `GET /` and `GET /health`.
An unknown `model` answers vLLM's 404; requests that do not fit the context answer 400.
`GET /metrics` (Prometheus) and `GET /stats` (JSON: load and prefix-cache state).
Concurrency: `model_config.n_parallel` generations at once (llama.cpp: sequences decoded together
in one context by batching.py); requests beyond that wait, at most `--max-queue-size` of them,
the rest get 450.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from openeas.processors.llm.backends import PROCESSOR, Backend, choose_backend, load_backend
from openeas.processors.llm.defaults import DEFAULT_PARALLEL
from openeas.processors.llm.metrics import CONTENT_TYPE, LlmMetrics
from openeas.processors.llm.sampling import Sampling
from openeas.processors.serving import (
    ProcessorError,
    ProcessorOptions,
    WorkerPool,
    bad_request,
    json_response,
    make_app,
    not_found,
    parse_options,
    read_json,
    serve,
    setup_logging,
    timed,
)

log = logging.getLogger("openeas.processors.llm")


# ---------------------------------------------------------------- generation -> text


@dataclass
class Delta:
    text: str


@dataclass
class Finish:
    reason: str  # "stop" | "length"
    prompt_tokens: int
    completion_tokens: int


def _held_back(text: str, stops: Sequence[str]) -> int:
    """How many trailing characters of `text` could start a stop string (and must wait)."""
    keep = 0
    for stop in stops:
        for n in range(min(len(stop) - 1, len(text)), 0, -1):
            if text.endswith(stop[:n]):
                keep = max(keep, n)
                break
    return keep


def generate_text(
    backend: Backend,
    prompt: list[int],
    max_tokens: int,
    stops: Sequence[str],
    sampling: Sampling,
    cancel: threading.Event,
) -> Iterator[Delta | Finish]:
    """Token ids -> text pieces, with stop strings, UTF-8-safe incremental decoding and counts.

    Decoding re-reads a short window of tokens (prefix_offset..) so that tokenizers that merge
    bytes or spaces across tokens produce the same text as decoding the whole completion.
    """
    context = list(prompt[-4:])  # a few prompt tokens so the first token decodes with its space
    ids = list(context)
    prefix_offset, read_offset = 0, len(ids)
    pending = ""  # decoded but not yet sent (could be the start of a stop string)
    completion = 0
    reason = "length"
    for token in backend.generate(prompt, sampling, cancel, max_tokens):
        if backend.is_eog(token):
            reason = "stop"
            break
        completion += 1
        ids.append(token)
        prefix_text = backend.decode(ids[prefix_offset:read_offset])
        new_text = backend.decode(ids[prefix_offset:])
        if len(new_text) > len(prefix_text) and not new_text.endswith("\ufffd"):
            pending += new_text[len(prefix_text) :]
            prefix_offset, read_offset = read_offset, len(ids)
        if stops:
            hit = min((i for i in (pending.find(s) for s in stops) if i >= 0), default=-1)
            if hit >= 0:
                if hit:
                    yield Delta(pending[:hit])
                pending = ""
                reason = "stop"
                break
            keep = _held_back(pending, stops)
            if len(pending) > keep:
                yield Delta(pending[: len(pending) - keep])
                pending = pending[len(pending) - keep :]
        elif pending:
            yield Delta(pending)
            pending = ""
        if completion >= max_tokens:
            break
    if pending and reason == "length":
        yield Delta(pending)
    yield Finish(reason, len(prompt), completion)


# ---------------------------------------------------------------- request parsing


@dataclass(frozen=True)
class Job:
    prompt: list[int]
    max_tokens: int
    stops: tuple[str, ...]
    sampling: Sampling
    stream: bool
    include_usage: bool


def _number(body: Mapping[str, Any], key: str, default: float, low: float, high: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad_request(f"{key} must be a number")
    if not low <= value <= high:
        raise bad_request(f"{key} must be between {low} and {high}, got {value}")
    return float(value)


def _int(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{key} must be an integer")
    return value


def _message_text(i: int, message: Any) -> dict[str, str]:
    if not isinstance(message, dict) or not isinstance(message.get("role"), str):
        raise bad_request(f"messages[{i}] must be an object with `role` and `content`")
    content = message.get("content")
    if content is None:
        content = ""
    if isinstance(content, list):
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad_request(f"messages[{i}].content: only text parts are supported by this model")
            parts.append(str(part.get("text", "")))
        content = "".join(parts)
    if not isinstance(content, str):
        raise bad_request(f"messages[{i}].content must be a string or a list of text parts")
    return {"role": message["role"], "content": content}


class LlmService:
    def __init__(self, backend: Backend, names: list[str], options: ProcessorOptions) -> None:
        self.backend = backend
        self.names = names
        self.pool = WorkerPool(backend.slots, options.max_queue_size)
        self.created = int(time.time())
        self.metrics = LlmMetrics(backend.engine_stats)
        # model_config.default_max_tokens: the completion budget of a request that names none
        # (0: the rest of the context, as vLLM does; a rambling sample then runs for minutes)
        default = options.model_config.get("default_max_tokens", 0)
        if not isinstance(default, int) or isinstance(default, bool) or default < 0:
            raise SystemExit("model_config.default_max_tokens must be a whole number >= 0 (0: no default)")
        self.default_max_tokens = default

    # ------------------------------------------------------------ checks

    def check_model(self, body: Mapping[str, Any]) -> str:
        model = body.get("model")
        if model is None:
            return self.names[0]
        if model not in self.names:
            raise not_found(f"The model `{model}` does not exist.")
        return str(model)

    def make_job(self, body: Mapping[str, Any], prompt: list[int]) -> Job:
        n = _int(body, "n")
        if n not in (None, 1):
            raise bad_request("n > 1 is not supported by this server; send n requests")
        sampling = Sampling(
            temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
            top_p=_number(body, "top_p", 1.0, 1e-9, 1.0),
            top_k=_int(body, "top_k") or -1,
            min_p=_number(body, "min_p", 0.0, 0.0, 1.0),
            presence_penalty=_number(body, "presence_penalty", 0.0, -2.0, 2.0),
            frequency_penalty=_number(body, "frequency_penalty", 0.0, -2.0, 2.0),
            repetition_penalty=_number(body, "repetition_penalty", 1.0, 1e-9, 10.0),
            seed=_int(body, "seed"),
        )
        stop = body.get("stop")
        if stop is None:
            stops: tuple[str, ...] = ()
        elif isinstance(stop, str):
            stops = (stop,) if stop else ()
        elif isinstance(stop, list) and all(isinstance(s, str) for s in stop):
            stops = tuple(s for s in stop if s)
        else:
            raise bad_request("stop must be a string or a list of strings")
        limit = self.backend.context_length
        requested = _int(body, "max_completion_tokens")
        if requested is None:
            requested = _int(body, "max_tokens")
        if requested is not None and requested < 1:
            raise bad_request("max_tokens must be at least 1")
        if len(prompt) >= limit or (requested is not None and len(prompt) + requested > limit):
            asked = len(prompt) + (requested or 0)
            raise bad_request(
                f"This model's maximum context length is {limit} tokens. However, you requested {asked} "
                f"tokens ({len(prompt)} in the messages, {requested or 0} in the completion). Please reduce "
                "the length of the messages or completion."
            )
        max_tokens = requested if requested is not None else limit - len(prompt)
        if requested is None and self.default_max_tokens:
            max_tokens = min(max_tokens, self.default_max_tokens)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise bad_request("stream must be true or false")
        options = body.get("stream_options") or {}
        include_usage = bool(isinstance(options, dict) and options.get("include_usage"))
        return Job(prompt, max_tokens, stops, sampling, stream, include_usage)

    # ------------------------------------------------------------ running

    async def events(self, job: Job) -> AsyncGenerator[Delta | Finish, None]:
        """Generation events, produced on a worker thread and handed to the event loop."""
        loop = asyncio.get_running_loop()
        out: asyncio.Queue[Delta | Finish | BaseException] = asyncio.Queue()
        cancel = threading.Event()

        def work() -> None:
            try:
                for event in generate_text(
                    self.backend, job.prompt, job.max_tokens, job.stops, job.sampling, cancel
                ):
                    loop.call_soon_threadsafe(out.put_nowait, event)
                    if cancel.is_set():
                        return
            except BaseException as exc:
                loop.call_soon_threadsafe(out.put_nowait, exc)

        task = asyncio.ensure_future(self.pool.run(work))
        try:
            while True:
                event = await out.get()
                if isinstance(event, BaseException):
                    log.exception("generation failed", exc_info=event)
                    raise ProcessorError(500, f"generation failed: {event}", "InternalServerError")
                yield event
                if isinstance(event, Finish):
                    return
        finally:
            cancel.set()
            if not task.done():
                # the worker stops at its next token; keep the slot counted until it has
                with contextlib.suppress(BaseException):
                    await asyncio.shield(task)

    async def metered(
        self, job: Job, operation: str, model: str, started: float
    ) -> AsyncGenerator[Delta | Finish, None]:
        """`events(job)`, timed: first token, duration, tokens (llm/metrics.py)."""
        first: float | None = None
        try:
            async with contextlib.aclosing(self.events(job)) as events:
                async for event in events:
                    if isinstance(event, Finish):
                        now = time.perf_counter()
                        if first is None and event.completion_tokens:
                            first = now  # the only token came with the end (stop strings held it)
                            self.metrics.first_token(operation, model, now - started)
                        self.metrics.finished(
                            operation, model, now - started, event.prompt_tokens, event.completion_tokens,
                            None if first is None else now - first,
                        )  # fmt: skip
                    elif first is None and event.text:
                        first = time.perf_counter()
                        self.metrics.first_token(operation, model, first - started)
                    yield event
        except ProcessorError as exc:
            self.metrics.failed(operation, model, time.perf_counter() - started, exc.type)
            raise

    async def complete(self, job: Job, operation: str, model: str, started: float) -> tuple[str, Finish]:
        parts: list[str] = []
        async with contextlib.aclosing(self.metered(job, operation, model, started)) as events:
            async for event in events:
                if isinstance(event, Delta):
                    parts.append(event.text)
                else:
                    return "".join(parts), event
        raise ProcessorError(500, "generation ended without a result", "InternalServerError")

    # ------------------------------------------------------------ HTTP handlers

    async def models(self, _: Request) -> Response:
        return json_response(
            {
                "object": "list",
                "data": [
                    {
                        "id": name,
                        "object": "model",
                        "created": self.created,
                        "owned_by": "openeas",
                        "root": name,
                        "parent": None,
                        "max_model_len": self.backend.context_length,
                    }
                    for name in self.names
                ],
            }
        )

    async def root(self, _: Request) -> Response:
        return json_response(
            {
                "processor": "llm",
                "backend": self.backend.name,
                "models": self.names,
                "max_model_len": self.backend.context_length,
                "routes": ["/v1/models", "/v1/chat/completions", "/v1/completions", "/metrics", "/stats"],
            }
        )

    async def chat(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        model = self.check_model(body)
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise bad_request("messages must be a non-empty list of {role, content} objects")
        msgs = [_message_text(i, m) for i, m in enumerate(messages)]
        try:
            text = self.backend.render_chat(msgs)
        except Exception as exc:
            raise bad_request(f"the chat template cannot render these messages: {exc}") from None
        job = self.make_job(body, self.backend.tokenize(text, add_special=True))
        return await self._respond(job, model, chat=True, started=started)

    async def completions(self, request: Request) -> Response:
        started = time.perf_counter()
        body = await read_json(request)
        if not isinstance(body, dict):
            raise bad_request("the body must be a JSON object")
        model = self.check_model(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str | list):
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = self.backend.tokenize(prompt, add_special=True)
        elif (
            isinstance(prompt, list)
            and prompt
            and all(isinstance(t, int) and not isinstance(t, bool) for t in prompt)
        ):
            ids = list(prompt)
        else:
            raise bad_request("prompt must be a string or a list of token ids (one prompt per request)")
        if body.get("echo"):
            raise bad_request("echo is not supported by this server")
        job = self.make_job(body, ids)
        return await self._respond(job, model, chat=False, started=started)

    async def _respond(self, job: Job, model: str, *, chat: bool, started: float) -> Response:
        rid = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        created = int(time.time())
        operation = "chat" if chat else "text_completion"  # gen_ai.operation.name
        if not job.stream:
            with self.pool.admit():
                text, fin = await self.complete(job, operation, model, started)
            usage = _usage(fin)
            if chat:
                choice: dict[str, Any] = {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "logprobs": None,
                    "finish_reason": fin.reason,
                }
                obj = "chat.completion"
            else:
                choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": fin.reason}
                obj = "text_completion"
            return json_response(
                {
                    "id": rid,
                    "object": obj,
                    "created": created,
                    "model": model,
                    "choices": [choice],
                    "usage": usage,
                }
            )
        admission = self.pool.admit()
        admission.__enter__()  # 450 now, before the stream starts
        return AdmittedStream(
            self._sse(job, model, rid, created, chat, started),
            release=lambda: admission.__exit__(None, None, None),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )

    async def _sse(
        self,
        job: Job,
        model: str,
        rid: str,
        created: int,
        chat: bool,
        started: float,
    ) -> AsyncIterator[bytes]:
        obj = "chat.completion.chunk" if chat else "text_completion"

        def chunk(choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> bytes:
            data: dict[str, Any] = {
                "id": rid,
                "object": obj,
                "created": created,
                "model": model,
                "choices": [] if choice is None else [choice],
            }
            if job.include_usage:
                data["usage"] = usage
            return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"

        def piece(text: str, reason: str | None) -> bytes:
            if chat:
                delta = {"content": text} if reason is None else {}
                return chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason})
            return chunk({"index": 0, "text": text, "logprobs": None, "finish_reason": reason})

        if chat:
            yield chunk({"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                         "finish_reason": None})  # fmt: skip
        try:
            operation = "chat" if chat else "text_completion"
            async with contextlib.aclosing(self.metered(job, operation, model, started)) as events:
                async for event in events:
                    if isinstance(event, Delta):
                        if event.text:
                            yield piece(event.text, None)
                        continue
                    yield piece("", event.reason)
                    if job.include_usage:
                        yield chunk(None, _usage(event))
        except ProcessorError as exc:
            error = {"object": "error", "message": exc.message, "type": exc.type, "code": exc.status}
            yield b"data: " + json.dumps({"error": error}).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"

    async def stats(self, _: Request) -> Response:
        """Load and prefix-cache state as JSON, cheap enough to poll (for LLM-aware routing)."""
        engine = self.backend.engine_stats()
        return json_response(
            {
                "slots": self.backend.slots,
                "admitted": self.pool.admitted,  # requests in this process: running + queued
                "engine": None if engine is None else dataclasses.asdict(engine),
            }
        )

    async def prometheus(self, _: Request) -> Response:
        return Response(self.metrics.render(), media_type=CONTENT_TYPE)

    def app(self) -> Starlette:
        routes = [
            Route("/", self.root, methods=["GET"]),
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/chat/completions", self.chat, methods=["POST"]),
            Route("/v1/completions", self.completions, methods=["POST"]),
            Route("/metrics", self.prometheus, methods=["GET"]),
            Route("/stats", self.stats, methods=["GET"]),
        ]
        return make_app(routes, on_shutdown=self.pool.shutdown)


class AdmittedStream(StreamingResponse):
    """A streaming response that holds a queue slot until it has been sent or abandoned.

    The slot is released when the response finishes for any reason (done, client gone,
    cancelled), even if the body generator never started.
    """

    def __init__(
        self, content: AsyncIterator[bytes], *, release: Callable[[], object], **kwargs: Any
    ) -> None:
        super().__init__(content, **kwargs)
        self._release = release
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._release()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.release()

    def __del__(self) -> None:  # never sent at all (the app failed before calling it)
        self.release()


def _usage(fin: Finish) -> dict[str, int]:
    return {
        "prompt_tokens": fin.prompt_tokens,
        "completion_tokens": fin.completion_tokens,
        "total_tokens": fin.prompt_tokens + fin.completion_tokens,
    }


def served_names(path: Path, config: Mapping[str, Any]) -> list[str]:
    """`model_config.served_model_name` (a name or a list), else the model file/dir name without suffix."""
    value = config.get("served_model_name", config.get("model_name"))
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return [path.stem if path.is_file() else path.name]


def exec_vllm(options: ProcessorOptions, names: list[str]) -> None:
    """Replace this process by vLLM's own OpenAI server (same routes, same errors)."""
    config = options.model_config
    argv = [
        sys.executable, "-m", "vllm.entrypoints.openai.api_server",
        "--model", options.model_path, "--host", options.host, "--port", str(options.port),
        "--served-model-name", *names,
    ]  # fmt: skip
    if "max_model_len" in config or "n_ctx" in config:
        argv += ["--max-model-len", str(int(config.get("max_model_len", config.get("n_ctx", 0))))]
    extra = config.get("vllm_args")
    if isinstance(extra, list):
        argv += [str(a) for a in extra]
    log.info("exec %s", " ".join(argv))
    os.execv(sys.executable, argv)


def main(argv: Sequence[str] | None = None) -> None:
    options = parse_options(PROCESSOR, argv)
    setup_logging(options.log_level)
    path = Path(options.model_path)
    config = options.model_config
    names = served_names(path, config)
    kind = choose_backend(path, config)
    if kind == "vllm":
        exec_vllm(options, names)
        return
    slots = int(config.get("n_parallel", DEFAULT_PARALLEL if kind == "llama.cpp" else 1))
    with timed(f"llm: loaded {path} on {kind} ({slots} slot(s))"):
        backend = load_backend(kind, path, config, slots)
    service = LlmService(backend, names, options)
    try:
        serve(service.app(), options, PROCESSOR)
    finally:
        backend.close()
