"""Rate and concurrency limits (no I/O): token buckets and in-flight counters.

A `TokenBucket` admits `rate` requests per second with a burst of `rate` (at least 1): it starts
full and refills continuously, so from full, exactly `rate` requests pass at once and then one
every 1/rate s. It is updated on demand with the loop's clock (no timer, no task): O(1) per
request. A `ServiceLimits` groups what one service is held to at the gateway; it outlives routing
snapshots (kept by service name), so a snapshot swap does not refill buckets or forget requests in
flight.

Without `--redis-url` the counters live in one gateway process: with `--workers N` each worker
enforces every limit on its own (see docs/gateway.md). With it, the service, group and instance
QPS buckets are `shared_limits.SharedBucket`s (the same interface plus `ready`), and the service
concurrency is also held in Redis (`SharedSlots`, `ServiceLimits.slots`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Protocol, TypeVar

USAGE_TAIL = 4096  # response bytes kept (the last ones) to find the `usage` in
_TOTAL = re.compile(rb'"total_tokens"\s*:\s*(\d+)')
_PROMPT = re.compile(rb'"prompt_tokens"\s*:\s*(\d+)')
_COMPLETION = re.compile(rb'"completion_tokens"\s*:\s*(\d+)')


def usage_tokens(tail: bytes) -> int:
    """Tokens a response used, from the last `usage` in its final bytes: an OpenAI JSON body, or
    the last SSE chunk that has one (`stream_options.include_usage`): `total_tokens`, else prompt
    + completion; 0 when none is there (nothing is counted)."""
    total = _TOTAL.findall(tail)
    if total:
        return int(total[-1])
    prompt, completion = _PROMPT.findall(tail), _COMPLETION.findall(tail)
    return (int(prompt[-1]) if prompt else 0) + (int(completion[-1]) if completion else 0)


class RateBucket(Protocol):
    """What admission reads of a QPS limit: a local `TokenBucket` or a shared one."""

    rate: float

    def take(self, now: float) -> bool: ...

    def retry_after(self) -> int: ...


class SharedRate(RateBucket, Protocol):
    """A QPS limit counted elsewhere (Redis): `ready` says whether `take` can decide now; if not,
    it has asked for permits and `wait` calls back when they came (shared_limits.py)."""

    def ready(self, now: float) -> bool: ...

    def wait(self, resume: Callable[[], None]) -> None: ...


class SharedSlots(SharedRate, Protocol):
    """A concurrency limit counted in Redis (shared_limits.SharedConcurrency): `take` holds a
    slot, `release` gives it back."""

    def release(self) -> None: ...


class TokenBucket:
    __slots__ = ("rate", "stamp", "tokens")

    def __init__(self, rate: int) -> None:
        self.rate = float(max(rate, 1))
        self.tokens = self.rate
        self.stamp = -math.inf  # first use: full

    def take(self, now: float) -> bool:
        """Take one token if there is one (refilling first for the time elapsed)."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.rate:
            tokens = self.rate
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False

    def retry_after(self) -> int:
        """Whole seconds until the next token (at least 1), for a `Retry-After` header."""
        return max(1, math.ceil((1.0 - self.tokens) / self.rate))

    def set_rate(self, rate: int) -> None:
        self.rate = float(max(rate, 1))
        if self.tokens > self.rate:
            self.tokens = self.rate


class TokenBudget:
    """Tokens per minute (LLM services): a bucket of `per_minute` tokens refilled at per_minute/60
    per second. A request is admitted while the bucket is above 0; the tokens it used (the
    `usage` of its response) are taken after it, so the bucket may go below 0, and requests wait
    (429, `Retry-After` until it is above 0 again) until the minute has refilled it."""

    __slots__ = ("per_minute", "rate", "stamp", "tokens")

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.tokens = float(per_minute)
        self.stamp = -math.inf

    def _refill(self, now: float) -> None:
        tokens = self.tokens + (now - self.stamp) * self.rate
        self.tokens = min(tokens, float(self.per_minute))
        self.stamp = now

    def take(self, now: float) -> bool:
        self._refill(now)
        return self.tokens > 0

    def debit(self, used: int, now: float) -> None:
        self._refill(now)
        self.tokens -= used

    def retry_after(self) -> int:
        return max(1, math.ceil(-self.tokens / self.rate)) if self.tokens <= 0 else 1

    def set_limit(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self.rate = per_minute / 60.0
        self.tokens = min(self.tokens, float(per_minute))


class TokenLimit(RateBucket, Protocol):
    """A tokens-per-minute limit: a local `TokenBudget` or one shared in Redis."""

    def debit(self, used: int, now: float) -> None: ...


class SharedTokenLimit(SharedRate, TokenLimit, Protocol):
    """A tokens-per-minute limit counted in Redis (shared_limits.SharedTokenBudget)."""


L = TypeVar("L")


def keep_limit(
    current: L | None, value: int, make: Callable[[int], L], retune: Callable[[L, int], None]
) -> L | None:
    """The one rule by which every limit object survives a new snapshot: None when there is no
    limit (`value` <= 0), `current` retuned to `value` when there was one (its state carries over,
    so a swap neither refills nor drains it), else a new one made at `value`."""
    if value <= 0:
        return None
    if current is None:
        return make(value)
    retune(current, value)
    return current


def keep_bucket(bucket: TokenBucket | None, rate: int) -> TokenBucket | None:
    """The bucket for a limit of `rate` QPS under a new snapshot (`keep_limit` for the local
    service, group and instance buckets)."""
    return keep_limit(bucket, rate, TokenBucket, TokenBucket.set_rate)


class ServiceLimits:
    """The gateway-side limits of one service, and its requests in flight.

    `bucket`: QPS of the service (its gateway_policy.rate_limit, else the gateway's default);
    `group`: the bucket of its group (shared by the group's services); `concurrency`: at most this
    many requests of the service at once (gateway_policy.concurrency_limit), counted from the
    checks until the response is complete. None / 0 means no such limit.
    """

    __slots__ = (
        "bucket",
        "concurrency",
        "group",
        "group_name",
        "in_flight",
        "qps",
        "shared",
        "slots",
        "token_limit",
        "tokens",
    )

    def __init__(self) -> None:
        self.qps = 0
        self.bucket: RateBucket | None = None
        self.group_name: str | None = None
        self.group: RateBucket | None = None
        self.concurrency = 0
        self.in_flight = 0
        self.shared: tuple[SharedRate, ...] = ()  # buckets counted in Redis (checked `ready` first)
        self.slots: SharedSlots | None = None  # with --redis-url: the concurrency counted in Redis
        self.token_limit = 0  # tokens per minute (gateway_policy.token_rate_limit); 0: none
        self.tokens: TokenLimit | None = None

    def configure(
        self,
        qps: int,
        group_name: str | None,
        group: RateBucket | None,
        concurrency: int,
        shared: tuple[SharedRate | None, SharedRate | None] | None = None,
        slots: SharedSlots | None = None,
    ) -> None:
        """`shared`: with --redis-url, the service's and the group's shared buckets (used instead
        of local ones); `slots`: the concurrency limit counted in Redis."""
        if shared is None:
            old = self.bucket
            self.bucket = keep_bucket(old if isinstance(old, TokenBucket) else None, qps)
            self.group = group
            self.shared = ()
        else:
            self.bucket, self.group = shared
            self.shared = tuple(b for b in (*shared, slots) if b is not None)
        self.slots = slots
        self.qps = qps
        self.group_name = group_name
        self.concurrency = concurrency

    def configure_tokens(self, per_minute: int, shared: SharedTokenLimit | None = None) -> None:
        """Tokens per minute: `shared` (a Redis-counted budget, with --redis-url) or a local one
        kept across snapshots; none when `per_minute` <= 0."""
        self.token_limit = max(per_minute, 0)
        if per_minute <= 0:
            self.tokens = None
        elif shared is not None:
            self.tokens = shared
            self.shared = (*self.shared, shared)
        elif isinstance(self.tokens, TokenBudget):
            self.tokens.set_limit(per_minute)
        else:
            self.tokens = TokenBudget(per_minute)

    def release(self) -> None:
        """A request holding one of the concurrency slots ended."""
        self.in_flight -= 1
        if self.slots is not None:
            self.slots.release()

    @property
    def active(self) -> bool:
        """Whether any check applies (else the hot path skips this object entirely)."""
        return (
            self.bucket is not None
            or self.group is not None
            or self.concurrency > 0
            or self.tokens is not None
        )


class GroupBuckets:
    """Token buckets by group name, kept across routing snapshots."""

    __slots__ = ("buckets",)

    def __init__(self) -> None:
        self.buckets: dict[str, TokenBucket] = {}

    def get(self, name: str | None, qps: int) -> TokenBucket | None:
        if not name:
            return None
        bucket = keep_bucket(self.buckets.get(name), qps)
        if bucket is not None:
            self.buckets[name] = bucket
        return bucket

    def keep_only(self, names: set[str]) -> None:
        for name in [n for n in self.buckets if n not in names]:
            del self.buckets[name]
