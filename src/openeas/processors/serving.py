"""The small HTTP serving layer shared by every built-in processor.

A processor is a Starlette app run by uvicorn (uvloop + httptools when installed). This module
gives each processor the same command line, the same JSON error shape, the same admission
control (`--workers` threads run the model, at most `--max-queue-size` requests wait, the rest
get 450) and an optional request batcher.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import importlib.util
import json
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Generic, NoReturn, TypeVar

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

T = TypeVar("T")
R = TypeVar("R")

log = logging.getLogger("openeas.processors")

# EAS defaults (metadata.rpc.*), see eas-reference section 5
DEFAULT_WORKERS = 5
DEFAULT_MAX_QUEUE_SIZE = 64
DEFAULT_MAX_BATCH_SIZE = 16
DEFAULT_MAX_BATCH_TIMEOUT_MS = 50


class ProcessorError(Exception):
    """An error answered to the caller as JSON: `{"object": "error", "code", "type", "message"}`."""

    def __init__(self, status: int, message: str, type_: str = "BadRequestError") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.type)


def bad_request(message: str) -> ProcessorError:
    return ProcessorError(400, message, "BadRequestError")


def not_found(message: str) -> ProcessorError:
    return ProcessorError(404, message, "NotFoundError")


def error_response(status: int, message: str, type_: str) -> JSONResponse:
    # the shape vLLM answers (the OpenAI SDK reads `message`); `code` is the HTTP status
    body = {"object": "error", "message": message, "type": type_, "param": None, "code": status}
    return JSONResponse(body, status_code=status)


class MissingExtra(SystemExit):
    """Raised at start when the optional dependency of a processor is not installed."""


def require(module: str, *, extra: str, processor: str) -> ModuleType:
    """Import an optional dependency, or stop the processor with the pip command that adds it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        msg = (
            f"processor {processor!r} needs the optional dependency {module!r}, which cannot be "
            f"imported ({exc}). Install it with: pip install 'openeas[{extra}]'"
        )
        print(msg, file=sys.stderr)
        raise MissingExtra(2) from exc


def fail_start(message: str) -> NoReturn:
    """Stop a processor at start with a message for the instance log."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


@dataclass(frozen=True)
class ProcessorOptions:
    """What every processor gets from its command line."""

    model_path: str
    port: int
    host: str = "127.0.0.1"
    workers: int = DEFAULT_WORKERS
    max_queue_size: int = DEFAULT_MAX_QUEUE_SIZE
    batching: bool = False
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_timeout_ms: int = DEFAULT_MAX_BATCH_TIMEOUT_MS
    model_config: dict[str, Any] = field(default_factory=dict)
    log_level: str = "info"


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def parse_model_config(text: str | None) -> dict[str, Any]:
    """`--model-config` is JSON text, `@path` to a JSON file, or empty."""
    if not text:
        return {}
    if text.startswith("@"):
        text = Path(text[1:]).read_text()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        fail_start(f"--model-config is not valid JSON ({exc}); give a JSON object")
    if isinstance(value, str):  # the spec allows model_config as a JSON string
        return parse_model_config(value)
    if not isinstance(value, dict):
        fail_start("--model-config must be a JSON object")
    return value


def parse_options(processor: str, argv: Sequence[str] | None = None) -> ProcessorOptions:
    parser = argparse.ArgumentParser(
        prog=f"python -m openeas.processors.{processor}",
        description=f"openeas built-in processor {processor!r}",
    )
    parser.add_argument("--model-path", required=True, help="model file or directory")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", "8000")), help="listen port (default $PORT)"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--workers", type=_positive, default=DEFAULT_WORKERS, help="rpc.worker_threads")
    parser.add_argument(
        "--max-queue-size", type=_positive, default=DEFAULT_MAX_QUEUE_SIZE, help="rpc.max_queue_size"
    )
    parser.add_argument("--batching", action="store_true", help="rpc.batching")
    parser.add_argument("--max-batch-size", type=_positive, default=DEFAULT_MAX_BATCH_SIZE)
    parser.add_argument(
        "--max-batch-timeout", type=_positive, default=DEFAULT_MAX_BATCH_TIMEOUT_MS, help="milliseconds"
    )
    parser.add_argument("--model-config", default=None, help="JSON object, or @file.json")
    parser.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    ns = parser.parse_args(argv)
    model_path = str(ns.model_path)
    if not Path(model_path).exists():
        fail_start(f"model_path {model_path!r} does not exist on this machine")
    return ProcessorOptions(
        model_path=model_path,
        port=ns.port,
        host=ns.host,
        workers=ns.workers,
        max_queue_size=ns.max_queue_size,
        batching=ns.batching,
        max_batch_size=ns.max_batch_size,
        max_batch_timeout_ms=ns.max_batch_timeout,
        model_config=parse_model_config(ns.model_config),
        log_level=ns.log_level,
    )


def cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class WorkerPool:
    """Runs blocking model calls on `workers` threads; at most `max_queue_size` requests wait.

    `admit()` is entered by a request before it needs a worker; when `workers + max_queue_size`
    requests are already admitted it raises the EAS 450 (queue full). Used from the event loop
    thread only, so the counter needs no lock.
    """

    def __init__(self, workers: int, max_queue_size: int) -> None:
        self.workers = workers
        self.max_queue_size = max_queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="model")
        self._admitted = 0

    @property
    def admitted(self) -> int:
        return self._admitted

    @contextlib.contextmanager
    def admit(self) -> Iterator[None]:
        if self._admitted >= self.workers + self.max_queue_size:
            raise ProcessorError(
                450,
                f"the instance queue is full ({self.workers} running, {self.max_queue_size} waiting); "
                "retry later, add instances, or raise metadata.rpc.max_queue_size",
                "QueueFullError",
            )
        self._admitted += 1
        try:
            yield
        finally:
            self._admitted -= 1

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


@dataclass
class _Pending(Generic[T, R]):
    item: T
    future: asyncio.Future[R]


class Batcher(Generic[T, R]):
    """Collects requests into batches of at most `max_size`, waiting at most `timeout_s` after the
    first one, and runs `run_batch(items) -> results` (one result or exception per item) on the
    worker pool. Several batches may run at once, up to the pool's worker count.
    """

    def __init__(
        self,
        run_batch: Callable[[list[T]], list[R | Exception]],
        pool: WorkerPool,
        max_size: int,
        timeout_s: float,
    ) -> None:
        self._run_batch = run_batch
        self._pool = pool
        self._max_size = max_size
        self._timeout_s = timeout_s
        self._queue: asyncio.Queue[_Pending[T, R]] | None = None
        self._collector: asyncio.Task[None] | None = None
        self._running: set[asyncio.Task[None]] = set()

    async def submit(self, item: T) -> R:
        if self._queue is None or self._collector is None:
            self._queue = asyncio.Queue()
            self._collector = asyncio.create_task(self._collect(self._queue))
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(item, future))
        return await future

    async def _collect(self, queue: asyncio.Queue[_Pending[T, R]]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [await queue.get()]
            deadline = loop.time() + self._timeout_s
            while len(batch) < self._max_size:
                left = deadline - loop.time()
                if left <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), left))
                except TimeoutError:
                    break
            task = asyncio.create_task(self._dispatch(batch))
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _dispatch(self, batch: list[_Pending[T, R]]) -> None:
        try:
            results = await self._pool.run(self._run_batch, [p.item for p in batch])
        except Exception as exc:  # the whole batch failed
            results = [exc] * len(batch)
        for pending, result in zip(batch, results, strict=True):
            if pending.future.done():
                continue
            if isinstance(result, Exception):
                pending.future.set_exception(result)
            else:
                pending.future.set_result(result)


async def read_json(request: Request) -> Any:
    body = await request.body()
    return parse_json_body(body)


def parse_json_body(body: bytes) -> Any:
    if not body.strip():
        raise bad_request("the request body is empty; send a JSON object")
    try:
        return json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON ({exc}); send a JSON object") from None


def json_response(data: Any, status: int = 200) -> Response:
    return Response(
        json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode(),
        status_code=status,
        media_type="application/json",
    )


def make_app(routes: Sequence[BaseRoute], on_shutdown: Callable[[], None] | None = None) -> Starlette:
    """A Starlette app whose errors all have the processor error shape."""

    async def health(_: Request) -> Response:
        return json_response({"status": "ok"})

    async def on_processor_error(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, ProcessorError)
        return exc.response()

    async def on_http_error(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        if status == 404:
            return error_response(
                404, f"no route for {request.url.path}; see GET / for the API", "NotFoundError"
            )
        if status == 405:
            return error_response(
                405, f"{request.method} is not allowed on {request.url.path}", "MethodNotAllowed"
            )
        return error_response(status, str(getattr(exc, "detail", exc)), "HTTPError")

    async def on_error(_: Request, exc: Exception) -> Response:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, f"internal error in the processor: {exc}", "InternalServerError")

    from starlette.exceptions import HTTPException

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> Any:
        yield
        if on_shutdown is not None:
            on_shutdown()

    return Starlette(
        routes=[*routes, Route("/health", health, methods=["GET"])],
        exception_handlers={
            ProcessorError: on_processor_error,
            HTTPException: on_http_error,
            Exception: on_error,
        },
        lifespan=lifespan,
    )


M = TypeVar("M")


def run_processor(
    processor: str,
    load: Callable[[ProcessorOptions], M],
    make_app: Callable[[M, ProcessorOptions], Starlette],
    argv: Sequence[str] | None = None,
) -> None:
    """A processor's `main`: parse the flags, set up logging, load the model (timed, before the
    port opens), build its app and serve it until SIGTERM/SIGINT."""
    options = parse_options(processor, argv)
    setup_logging(options.log_level)
    with timed(f"{processor}: loaded {options.model_path}"):
        model = load(options)
    serve(make_app(model, options), options, processor)


def serve(app: Starlette, options: ProcessorOptions, processor: str) -> None:
    """Run the app until SIGTERM/SIGINT. The port opens only once the model is loaded; `--port 0`
    takes any free port. Once listening it prints its ready line to stdout:
    `openeas processor NAME ready on HOST:PORT` (tests/harness.py reads the port there)."""
    import uvicorn

    loop = "uvloop" if importlib.util.find_spec("uvloop") else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") else "h11"
    sock = socket.socket(socket.AF_INET6 if ":" in options.host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((options.host, options.port))
    except OSError as exc:
        sock.close()
        fail_start(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}")
    sock.listen(2048)
    port = int(sock.getsockname()[1])
    log.info("processor %s listening on %s:%d", processor, options.host, port)
    print(f"openeas processor {processor} ready on {options.host}:{port}", flush=True)
    config = uvicorn.Config(
        app,
        loop=loop,
        http=http,
        log_level="warning" if options.log_level == "info" else options.log_level,
        access_log=False,
        timeout_keep_alive=30,
    )
    uvicorn.Server(config).run(sockets=[sock])


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@contextlib.contextmanager
def timed(what: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    log.info("%s in %.2f s", what, time.perf_counter() - start)
