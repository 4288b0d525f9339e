"""A paced HTTP/1.1 load generator for the limit tests: N keep-alive connections, a fixed total rate.

`run_paced(targets, qps, seconds)` sends GETs at `qps` in all for `seconds`, spread evenly over
connections to every (port, path, token) target (each target gets `conns` connections, so every
worker process behind a SO_REUSEPORT port gets some), and returns one `(sent, answered, status)`
per request (`time.time()`): the gateway decided somewhere in between, so a request sent and
answered within the same second was surely admitted in that second. A connection the gateway
closes is reopened. Stdlib asyncio only.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Sequence


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bool]:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    close = False
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            close = True
    if length:
        await reader.readexactly(length)
    return status, close


async def _connection(
    port: int,
    path: str,
    token: str,
    interval: float,
    start: float,
    end: float,
    out: list[tuple[float, float, int]],
) -> None:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {token}\r\n\r\n").encode()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    loop = asyncio.get_running_loop()
    at = start
    while at < end:
        delay = at - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        at += interval
        sent = time.time()
        try:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request)
            status, close = await asyncio.wait_for(_read_response(reader), 10)
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            status, close = 0, True  # 0: no answer (connection failed or cut)
        out.append((sent, time.time(), status))
        if close and writer is not None:
            writer.close()
            reader = writer = None
    if writer is not None:
        writer.close()


async def _run(
    targets: Sequence[tuple[int, str, str]], qps: float, seconds: float, conns: int
) -> list[tuple[float, float, int]]:
    loop = asyncio.get_running_loop()
    n = len(targets) * conns
    interval = n / qps
    start = loop.time() + 0.2
    end = start + seconds
    out: list[tuple[float, float, int]] = []
    tasks = [
        _connection(port, path, token, interval, start + interval * (i * conns + c) / n, end, out)
        for i, (port, path, token) in enumerate(targets)
        for c in range(conns)
    ]
    await asyncio.gather(*tasks)
    return out


def run_paced(
    targets: Sequence[tuple[int, str, str]], qps: float, seconds: float, conns: int = 4
) -> list[tuple[float, float, int]]:
    return asyncio.run(_run(targets, qps, seconds, conns))


def admitted_per_second(results: Sequence[tuple[float, float, int]], status: int = 200) -> dict[int, int]:
    """Requests answered `status` that were surely decided in second s (sent and answered in s),
    by s. Each second's count is a lower bound of what the gateway admitted in it, so a count over
    a limit is a real breach, whatever the machine's load."""
    return dict(
        Counter(
            int(sent) for sent, answered, code in results if code == status and int(sent) == int(answered)
        )
    )
