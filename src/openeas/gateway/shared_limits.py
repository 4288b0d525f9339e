"""Rate limits shared by every gateway process and replica, counted in Redis (`--redis-url`).

Why: a limit counted per process is multiplied by `--workers` and by the number of replicas.
Here the count of a limit lives in Redis, and a process may admit a request only with a permit
Redis granted it:

- Permits are counted in fixed 1 s windows of Redis' own clock (`TIME`), one key per limit and
  window. `LEASE` (a Lua script: check and count in one atomic step) grants a process up to `k`
  permits of the current window, never more than `limit` in all for the window, and tells how
  many milliseconds of the window are left. The process spends its permits locally and drops what
  is left when the window ends (its local deadline is taken from the moment it sent the lease, so
  it ends no later than Redis' window). So the processes together admit at most `limit` per
  window of Redis' clock: no over-admission; the cost of batching is under-admission, at most
  (k - 1) permits per process per window left unspent while another process refuses.
- `k` = limit / (10 x live processes), between 1 and 50: at most ~10% of a window can be left
  unspent in other processes' hands, and a process asks Redis once every k requests.
- A process that has no permit and does not know the window is spent asks Redis and the request
  waits for the answer (an `admission.Wait`; one lease answers every request waiting on it);
  when a process spends its last permit it asks for the next batch at once, in the background.
  A grant of 0 marks the limit spent in this process until the window ends (429 with no round trip).
- Live processes: each process refreshes its id in a sorted set every second; those seen in the
  last 3 s are live. The count sizes `k` and the fall-back.
- Redis unreachable (a connection error, or no answer within 1 s): every shared limit falls back
  to a local token bucket at limit / live processes (the last count seen; it starts empty, so the
  switch adds no burst to what this second already admitted), `fallbacks` counts the
  requests so decided; a background probe retries with backoff (0.25 s doubling to 2 s) and the
  limits go back to Redis as soon as it answers. Nothing on the event loop ever waits on a dead
  Redis: all calls are asynchronous and time out.

Per-instance QPS (`metadata.rpc.rate_limit`) is a `SharedBucket` like the service's, keyed by the
instance's address (`instance:HOST:PORT`), checked when the instance is picked.

Service concurrency (`gateway_policy.concurrency_limit`) is a `SharedConcurrency`: a Redis hash
per service, one field per process (its id -> the slots it holds). `ACQUIRE` (Lua) sums the
fields of live processes only (ids in the live set; a dead process's field is deleted there),
and grants slots while the sum is under the limit; a finished request gives its slot back
(`RELEASE`, decrement). No batching: each admitted request of such a service costs one round
trip (requests waiting together share it). A process that dies holding slots (SIGKILL) drops
out of the live set after LIVE_S, and its slots are free again at the next acquire: within
LIVE_S + HEARTBEAT_S (~4 s). Each heartbeat restores the process' field when it is missing (it
was taken for dead, or Redis restarted empty); after an outage it is set to what the process
holds. A process that found the limit full refuses (429) for FULL_S without asking again.
Redis down: the local limit is limit / live processes, counted in `fallbacks`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable
from functools import partial
from time import monotonic
from typing import Any, TypeVar

from openeas.gateway.limits import TokenBucket, TokenBudget, keep_limit

L = TypeVar("L")

log = logging.getLogger("openeas.gateway")

KEY_PREFIX = "openeas:limit:"
LIVE_KEY = "openeas:gateway-processes"
LIVE_S = 3.0  # a process not seen for this long is not counted
HEARTBEAT_S = 1.0
TIMEOUT_S = 1.0  # a Redis call taking longer counts as Redis being down (a refused connection: at once)
CONNECT_TIMEOUT_S = 0.25  # a connection to an address that does not answer
BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 2.0
LEASE_SHARE = 10  # k = limit / (LEASE_SHARE x live processes)
LEASE_MAX = 50
CONC_PREFIX = "openeas:concurrency:"
FULL_S = 0.02  # a process told the concurrency limit is full refuses without asking for this long

# KEYS[1]: the limit's key prefix. ARGV: permits wanted, the limit.
# Returns {granted, milliseconds left in the window}. Check and count in one step.
LEASE = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local key = KEYS[1] .. ':' .. sec
local used = tonumber(redis.call('GET', key) or '0')
local grant = math.min(tonumber(ARGV[1]), tonumber(ARGV[2]) - used)
if grant < 0 then grant = 0 end
if grant > 0 then
  redis.call('INCRBY', key, grant)
  redis.call('PEXPIRE', key, 3000)
end
return {grant, 1000 - math.floor(tonumber(t[2]) / 1000)}
"""


# KEYS[1]: the service's slot hash, KEYS[2]: the live set. ARGV: this process' id, slots wanted,
# the limit. Sums the fields of live processes (deletes the dead ones'), grants up to the rest.
ACQUIRE = """
local fields = redis.call('HGETALL', KEYS[1])
local used = 0
for i = 1, #fields, 2 do
  if fields[i] == ARGV[1] or redis.call('ZSCORE', KEYS[2], fields[i]) then
    used = used + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], fields[i])
  end
end
local grant = math.min(tonumber(ARGV[2]), tonumber(ARGV[3]) - used)
if grant < 0 then grant = 0 end
if grant > 0 then redis.call('HINCRBY', KEYS[1], ARGV[1], grant) end
return grant
"""

# KEYS[1]: the slot hash; ARGV: this process' id, slots given back. Only while the field exists
# (deleted: the process was taken for dead; its heartbeat restores it from what it holds).
RELEASE = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  return redis.call('HINCRBY', KEYS[1], ARGV[1], -tonumber(ARGV[2]))
end
return 0
"""


# Tokens per minute. KEYS[1]: the limit's key prefix; ARGV[1]: tokens to add (0: read only).
# Returns {tokens used in this minute of Redis' clock, milliseconds left in the minute}.
TOKENS = """
local t = redis.call('TIME')
local sec = tonumber(t[1])
local key = KEYS[1] .. ':' .. math.floor(sec / 60)
local used = tonumber(redis.call('INCRBY', key, tonumber(ARGV[1])))
redis.call('EXPIRE', key, 120)
return {used, (60 - sec % 60) * 1000 - math.floor(tonumber(t[2]) / 1000)}
"""
# a process re-reads a token budget it has not heard of for this long: in effect one Redis read
# per admitted request (requests arriving together share it), cheap next to an LLM generation
TOKEN_SYNC_S = 0.005


def lease_size(limit: int, live: int) -> int:
    """Permits one process asks for at a time (see the module docstring)."""
    return max(1, min(LEASE_MAX, limit // (LEASE_SHARE * max(live, 1))))


class SharedBucket:
    """One shared limit (a service's, a group's QPS) in one process: the permits leased from
    Redis for the current window, or, while Redis is down, a local bucket at limit / live.

    Has the `TokenBucket` interface the admission code reads (`take`, `retry_after`, `rate`), plus
    `ready`, which tells whether `take` can decide without asking Redis first."""

    __slots__ = (
        "expires",
        "fallback",
        "key",
        "limit",
        "limiter",
        "pending",
        "permits",
        "rate",
        "spent_until",
        "waiters",
    )

    def __init__(self, limiter: SharedLimiter, key: str, limit: int) -> None:
        self.limiter = limiter
        self.key = KEY_PREFIX + key
        self.limit = limit
        self.rate = float(limit)
        self.permits = 0
        self.expires = 0.0  # loop time the leased permits lapse (the end of their window)
        self.spent_until = 0.0  # Redis said the window is spent: refuse until then
        self.pending = False  # a lease request is on its way
        self.waiters: list[Callable[[], None]] = []
        self.fallback = TokenBucket(fallback_rate(limit, limiter.live))

    def set_rate(self, limit: int) -> None:
        self.limit = limit
        self.rate = float(limit)
        self.fallback.set_rate(fallback_rate(limit, self.limiter.live))

    def ready(self, now: float) -> bool:
        """`take` decides now: a permit is at hand, the window is known spent, or Redis is down.

        Window ends are compared with `time.monotonic()`, not the loop time `now`: the loop's
        clock is read once per iteration, and on a loaded machine an iteration can end past a
        window that its cached clock says is still open (permits spent in the next window)."""
        if not self.limiter.up:
            return True
        now = monotonic()
        if self.permits > 0 and now < self.expires:
            return True
        if now < self.spent_until:
            return True
        if not self.pending:
            self.limiter.lease(self)
        return False

    def wait(self, resume: Callable[[], None]) -> None:
        """Call `resume` once the lease on its way is answered (or Redis is found down)."""
        self.waiters.append(resume)

    def take(self, now: float) -> bool:
        limiter = self.limiter
        if not limiter.up:
            limiter.fallbacks += 1
            return self.fallback.take(now)
        now = monotonic()  # see `ready`
        if self.permits > 0 and now < self.expires:
            self.permits -= 1
            if self.permits == 0 and not self.pending and now + 0.001 < self.expires:
                limiter.lease(self)  # the next batch, before a request has to wait for it
            return True
        return False

    def retry_after(self) -> int:
        if not self.limiter.up:
            return self.fallback.retry_after()
        return 1  # the next window starts within a second

    def granted(self, sent: float, grant: int, ms_left: int) -> None:
        """Redis answered a lease sent at loop time `sent`."""
        self.pending = False
        end = sent + ms_left / 1000.0
        if grant > 0:
            # a later window (ends ~1 s after the one held): its permits replace the old ones
            self.permits = grant if end - self.expires > 0.5 else self.permits + grant
            self.expires = max(end, self.expires)
        else:
            self.spent_until = end
        self._resume()

    def failed(self) -> None:
        self.pending = False
        self._resume()

    def _resume(self) -> None:
        waiters, self.waiters = self.waiters, []
        for resume in waiters:
            resume()


class SharedTokenBudget:
    """A tokens-per-minute limit counted in Redis in fixed minutes of its clock: every response's
    tokens are added there (`debit`, in the background); a process admits while the minute's
    total it last heard is under the limit, and re-reads it (the request waits, `ready`) when it
    has not heard for TOKEN_SYNC_S. While Redis is down: a local `TokenBudget` at limit / live."""

    __slots__ = (
        "fallback",
        "heard",
        "key",
        "limiter",
        "pending",
        "per_minute",
        "rate",
        "spent_until",
        "waiters",
    )

    def __init__(self, limiter: SharedLimiter, key: str, per_minute: int) -> None:
        self.limiter = limiter
        self.key = KEY_PREFIX + key
        self.per_minute = per_minute
        self.rate = float(per_minute)
        self.heard = -math.inf  # loop time of the last answer
        self.spent_until = 0.0
        self.pending = False
        self.waiters: list[Callable[[], None]] = []
        self.fallback = TokenBudget(fallback_rate(per_minute, limiter.live))

    def set_limit(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.rate = float(per_minute)
        self.fallback.set_limit(fallback_rate(per_minute, self.limiter.live))

    def ready(self, now: float) -> bool:
        if not self.limiter.up or now < self.spent_until or now - self.heard < TOKEN_SYNC_S:
            return True
        if not self.pending:
            self.limiter.add_tokens(self, 0)
        return False

    def wait(self, resume: Callable[[], None]) -> None:
        self.waiters.append(resume)

    def take(self, now: float) -> bool:
        if not self.limiter.up:
            self.limiter.fallbacks += 1
            return self.fallback.take(now)
        return now >= self.spent_until

    def debit(self, used: int, now: float) -> None:
        if not self.limiter.up:
            self.fallback.debit(used, now)
        elif used > 0:
            self.limiter.add_tokens(self, used)

    def retry_after(self) -> int:
        if not self.limiter.up:
            return self.fallback.retry_after()
        loop_now = self.limiter.now()
        return max(1, math.ceil(self.spent_until - loop_now))

    def heard_from(self, sent: float, used: int, ms_left: int) -> None:
        self.pending = False
        self.heard = self.limiter.now()  # fresh for TOKEN_SYNC_S: the waiters resumed now use it
        if used >= self.per_minute:
            self.spent_until = sent + ms_left / 1000.0
        self._resume()

    def failed(self) -> None:
        self.pending = False
        self._resume()

    def _resume(self) -> None:
        waiters, self.waiters = self.waiters, []
        for resume in waiters:
            resume()


class SharedConcurrency:
    """A service's concurrency limit counted in Redis (see the module docstring), in one process.

    `ready` / `wait` as a `SharedBucket`'s; `take` holds a slot, `release` gives it back.
    `granted` is non-zero only while the waiters of an answer are resumed: what they did not
    take is given back at once."""

    __slots__ = (
        "dirty",
        "full_until",
        "granted",
        "held",
        "key",
        "limit",
        "limiter",
        "local",
        "pending",
        "rate",
        "waiters",
    )

    def __init__(self, limiter: SharedLimiter, key: str, limit: int) -> None:
        self.limiter = limiter
        self.key = CONC_PREFIX + key
        self.limit = limit
        self.rate = float(limit)
        self.held = 0  # slots held through Redis (equals this process' field there)
        self.local = 0  # slots held while Redis was down (the fall-back)
        self.granted = 0
        self.full_until = 0.0
        self.pending = False
        self.dirty = False  # a release did not reach Redis: set the field at the next heartbeat
        self.waiters: list[Callable[[], None]] = []

    def set_limit(self, limit: int) -> None:
        self.limit = limit
        self.rate = float(limit)

    def ready(self, now: float) -> bool:
        if not self.limiter.up or self.granted > 0 or monotonic() < self.full_until:
            return True
        if not self.pending:
            self.limiter.acquire(self)
        return False

    def wait(self, resume: Callable[[], None]) -> None:
        self.waiters.append(resume)

    def take(self, now: float) -> bool:
        limiter = self.limiter
        if not limiter.up:
            limiter.fallbacks += 1
            if self.held + self.local < fallback_rate(self.limit, limiter.live):
                self.local += 1
                return True
            return False
        if self.granted > 0:
            self.granted -= 1
            self.held += 1
            return True
        return False

    def release(self) -> None:
        if self.held > 0:
            self.held -= 1
            self.limiter.release(self, 1)
        elif self.local > 0:
            self.local -= 1

    def retry_after(self) -> int:
        return 1

    def answered(self, want: int, grant: int) -> None:
        """Redis granted `grant` of the `want` slots asked for (fewer: the limit is full)."""
        self.pending = False
        self.granted += grant
        if grant < want:
            self.full_until = monotonic() + FULL_S
        self._resume()

    def failed(self) -> None:
        self.pending = False
        self._resume()

    def _resume(self) -> None:
        waiters, self.waiters = self.waiters, []
        for resume in waiters:
            resume()
        if self.granted > 0:  # not taken (a waiter refused by another limit, or gone)
            self.limiter.release(self, self.granted)
            self.granted = 0


class SharedLimiter:
    """The Redis connection of one gateway process and its shared buckets, by limit key."""

    def __init__(self, url: str, *, workers: int = 1, client: Any = None) -> None:
        self.url = url
        self.id = f"{os.uname().nodename}:{os.getpid()}:{os.urandom(3).hex()}"
        self.up = False  # until the first answer: local fall-back
        self.live = max(workers, 1)  # live gateway processes (last count seen)
        self.fallbacks = 0  # requests decided by a fall-back bucket (Redis down)
        self.outages = 0  # times Redis was found unreachable
        self.leases = 0
        self.buckets: dict[str, SharedBucket] = {}
        self.budgets: dict[str, SharedTokenBudget] = {}
        self.slots: dict[str, SharedConcurrency] = {}
        self._client: Any = client
        self._script: Any = None
        self._tokens_script: Any = None
        self._acquire_script: Any = None
        self._release_script: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # -- lifecycle -------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        import redis.asyncio as aioredis  # the optional extra openeas[redis]

        self._loop = loop
        if self._client is None:
            self._client = aioredis.Redis.from_url(
                self.url, socket_timeout=TIMEOUT_S, socket_connect_timeout=CONNECT_TIMEOUT_S, retry=None
            )
        self._script = self._client.register_script(LEASE)
        self._tokens_script = self._client.register_script(TOKENS)
        self._acquire_script = self._client.register_script(ACQUIRE)
        self._release_script = self._client.register_script(RELEASE)
        self._task = loop.create_task(self._heartbeat())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
        for task in list(self._tasks):
            task.cancel()
        if self._client is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._client.zrem(LIVE_KEY, self.id), TIMEOUT_S)
            with contextlib.suppress(Exception):
                await self._client.aclose()

    # -- buckets ---------------------------------------------------------------------------
    def bucket(self, key: str, limit: int) -> SharedBucket | None:
        """The shared bucket for limit `key` ("service:NAME", "group:NAME") at `limit` per
        second, kept across routing snapshots; None when there is no limit."""
        return _kept(self.buckets, key, limit, partial(SharedBucket, self, key), SharedBucket.set_rate)

    def budget(self, key: str, per_minute: int) -> SharedTokenBudget | None:
        """The shared tokens-per-minute budget `key` ("tokens:service:NAME"); None: no limit."""
        make = partial(SharedTokenBudget, self, key)
        return _kept(self.budgets, key, per_minute, make, SharedTokenBudget.set_limit)

    def concurrency(self, key: str, limit: int) -> SharedConcurrency | None:
        """The shared concurrency limit `key` ("concurrency:service:NAME"); None: no limit."""
        make = partial(SharedConcurrency, self, key)
        return _kept(self.slots, key, limit, make, SharedConcurrency.set_limit)

    def keep_only(self, keys: set[str]) -> None:
        for key in [k for k in self.buckets if k not in keys]:
            del self.buckets[key]
        for key in [k for k in self.slots if k not in keys]:
            del self.slots[key]
        for key in [k for k in self.budgets if k not in keys]:
            del self.budgets[key]

    def now(self) -> float:
        return self._loop.time() if self._loop is not None else 0.0

    # -- Redis -----------------------------------------------------------------------------
    def lease(self, bucket: SharedBucket) -> None:
        """Ask Redis for the next permits of `bucket` (in the background)."""
        loop = self._loop
        if loop is None:
            return
        bucket.pending = True
        task = loop.create_task(self._lease(bucket, monotonic()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lease(self, bucket: SharedBucket, sent: float) -> None:
        want = lease_size(bucket.limit, self.live)
        try:
            grant, ms_left = await asyncio.wait_for(
                self._script(keys=[bucket.key], args=[want, bucket.limit]), TIMEOUT_S
            )
        except Exception as exc:  # any failure: decide locally until Redis answers again
            self._down(exc)
            bucket.failed()
            return
        self.leases += 1
        bucket.granted(sent, int(grant), int(ms_left))

    def acquire(self, slots: SharedConcurrency) -> None:
        """Ask Redis for concurrency slots for the requests waiting on `slots` (background)."""
        loop = self._loop
        if loop is None:
            return
        slots.pending = True
        self._spawn(loop, self._acquire(slots))

    async def _acquire(self, slots: SharedConcurrency) -> None:
        want = max(len(slots.waiters), 1)  # read when sent: every request waiting by then
        try:
            grant = await asyncio.wait_for(
                self._acquire_script(keys=[slots.key, LIVE_KEY], args=[self.id, want, slots.limit]),
                TIMEOUT_S,
            )
        except Exception as exc:
            self._down(exc)
            slots.failed()
            return
        slots.answered(want, int(grant))

    def release(self, slots: SharedConcurrency, n: int) -> None:
        """Give `n` slots back in Redis (background); on failure the heartbeat sets the field."""
        loop = self._loop
        if loop is None or not self.up:
            slots.dirty = True
            return
        self._spawn(loop, self._release(slots, n))

    async def _release(self, slots: SharedConcurrency, n: int) -> None:
        try:
            await asyncio.wait_for(self._release_script(keys=[slots.key], args=[self.id, n]), TIMEOUT_S)
        except Exception as exc:
            slots.dirty = True
            self._down(exc)

    def _spawn(self, loop: asyncio.AbstractEventLoop, coro: Any) -> None:
        task = loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def add_tokens(self, budget: SharedTokenBudget, used: int) -> None:
        """Add `used` tokens to `budget`'s minute in Redis (0: read it), in the background."""
        loop = self._loop
        if loop is None:
            return
        budget.pending = True
        task = loop.create_task(self._add_tokens(budget, used, loop.time()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _add_tokens(self, budget: SharedTokenBudget, used: int, sent: float) -> None:
        try:
            total, ms_left = await asyncio.wait_for(
                self._tokens_script(keys=[budget.key], args=[used]), TIMEOUT_S
            )
        except Exception as exc:
            self._down(exc)
            budget.failed()
            return
        budget.heard_from(sent, int(total), int(ms_left))

    def _down(self, exc: BaseException) -> None:
        if self.up:
            self.up = False
            self.outages += 1
            log.warning(
                "Redis at %s is unreachable (%s): shared limits fall back to local ones "
                "(each limit / %d live gateway processes) until it is back",
                _safe_url(self.url),
                type(exc).__name__,
                self.live,
            )
            now = self.now()
            for bucket in self.buckets.values():
                bucket.set_rate(bucket.limit)  # the fall-back at the current live count
                bucket.permits = 0
                bucket.spent_until = 0.0
                # empty, not full: this second's permits were spent through Redis already, so
                # the fall-back admits only its rate from now on (no burst on top of them)
                bucket.fallback.tokens = 0.0
                bucket.fallback.stamp = now

    async def _heartbeat(self) -> None:
        """Every second: refresh this process in the live set and count the live processes.
        While Redis is down, the same call is the probe, retried with backoff."""
        backoff = BACKOFF_MIN_S
        client = self._client
        while True:
            try:
                now = time.time()
                pipe = client.pipeline(transaction=True)
                pipe.zadd(LIVE_KEY, {self.id: now})
                pipe.zremrangebyscore(LIVE_KEY, "-inf", now - LIVE_S)
                pipe.zcard(LIVE_KEY)
                for slots in self.slots.values():
                    # restore this process' field (taken for dead, Redis restarted empty), or,
                    # after releases that did not reach Redis, set it to what it holds
                    if slots.dirty or not self.up:
                        pipe.hset(slots.key, self.id, slots.held)
                    else:
                        pipe.hsetnx(slots.key, self.id, slots.held)
                result = await asyncio.wait_for(pipe.execute(), TIMEOUT_S)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._down(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)
                continue
            backoff = BACKOFF_MIN_S
            for slots in self.slots.values():
                slots.dirty = False
            self.live = max(int(result[2]), 1)
            if not self.up:
                # connections pooled before the outage are dead: drop them, or the next leases
                # would fail on them and send the limits back to the fall-back
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        client.connection_pool.disconnect(inuse_connections=False), TIMEOUT_S
                    )
                self.up = True
                log.info("Redis at %s answers: shared limits are counted there", _safe_url(self.url))
            for bucket in self.buckets.values():
                bucket.fallback.set_rate(fallback_rate(bucket.limit, self.live))
            for budget in self.budgets.values():
                budget.fallback.set_limit(fallback_rate(budget.per_minute, self.live))
            await asyncio.sleep(HEARTBEAT_S)


def _safe_url(url: str) -> str:
    """The Redis URL without a password (never logged)."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.split('@', 1)[1]}"
    return url


def fallback_rate(limit: int, live: int) -> int:
    """The local limit while Redis is down: `limit` / live processes, at least 1."""
    return max(1, math.floor(limit / max(live, 1)))


def _kept(
    table: dict[str, L], key: str, value: int, make: Callable[[int], L], retune: Callable[[L, int], None]
) -> L | None:
    """`keep_limit` for a limit held in `table` under `key`: dropped from it when there is none."""
    kept = keep_limit(table.get(key), value, make, retune)
    if kept is None:
        table.pop(key, None)
    else:
        table[key] = kept
    return kept
