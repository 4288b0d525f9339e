"""Instance picking strategies: which ready instance of a service a request goes to (no I/O).

A `Picker` is asked once per attempt of a request, with the service's instances, the loop time,
the instances already tried for this request (a refused connection, a stale pooled one) and the
request itself (method, target, headers: what a content-aware strategy keys on). It returns one
instance or None when every instance was tried. The gateway keeps one picker per service per
routing snapshot (`routes.RouteEntry.picker`), so a strategy may keep state (a cursor, a table).

Strategies, by the name a service's spec selects (`strategy_for`):

- `least_outstanding` (the default): the instance with the fewest requests assigned
  (in flight + queued there); ties are broken round-robin; an instance refused a connection in
  the last second is chosen only when nothing else is left.
- `prefix_affinity` (`metadata.llm_routing: "prefix"`): LLM services. The request's prompt prefix
  (from its JSON body, `prefix_key`) goes to the instance that served that prefix last (its KV
  cache holds it), unless that instance has more than `LOAD_FACTOR` x the least loaded one's
  requests + `LOAD_SLACK`: then least outstanding, and the prefix moves there. The table is an
  LRU of `AFFINITY_MAX` prefixes. Such a picker `wants_body`: the gateway picks once the body is
  in (at most `BODY_MAX` bytes buffered; a longer body is keyed on what came).

To add one: a subclass of `Picker` in this file, its name in `PICKERS`, and the rule that selects
it in `strategy_for`. Nothing else in the gateway changes.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

DOWN_PENALTY = 1 << 30  # a marked-down instance is picked only when nothing else is left
DEFAULT_STRATEGY = "least_outstanding"
PREFIX_STRATEGY = "prefix_affinity"
PREFIX_CHARS = 1024  # characters of the prompt prefix that key the affinity
AFFINITY_MAX = 4096  # prefixes remembered per service (LRU)
BODY_MAX = 64 * 1024  # body bytes a prefix-routed request buffers before it is picked
LOAD_FACTOR = 1.5  # the prefix's instance is kept while it has <= F x least + SLACK assigned
LOAD_SLACK = 1


class Candidate(Protocol):
    """What a strategy reads of an instance (`instances.UpstreamState`)."""

    outstanding: int  # requests assigned: in flight + waiting in its queue
    down_until: float  # loop time until which a refused connection marks it down
    addr: str  # host:port, what the affinity table remembers (states change across snapshots)


class PickedRequest(Protocol):
    """What a strategy may read of the request (`exchange.Exchange`)."""

    method: bytes
    target: bytes  # the forwarded path and query
    headers: list[tuple[bytes, bytes]]

    def body_head(self) -> bytes:
        """The request body received so far (b"" when chunked or none)."""
        ...


C = TypeVar("C", bound=Candidate)


class Picker(ABC):
    """One service's strategy (one object per service per routing snapshot)."""

    __slots__ = ()
    wants_body = False  # pick only once the body is in (bounded by BODY_MAX)

    @abstractmethod
    def pick(
        self, instances: Sequence[C], now: float, tried: list[C] | None, request: PickedRequest
    ) -> C | None:
        """The instance for this attempt, never one in `tried`; None: none is left."""


class LeastOutstanding(Picker):
    """Fewest requests assigned, ties round-robin, recently refused instances last."""

    __slots__ = ("next",)

    def __init__(self) -> None:
        self.next = 0  # where the next scan starts: equals are taken in turn

    def pick(
        self, instances: Sequence[C], now: float, tried: list[C] | None, request: PickedRequest
    ) -> C | None:
        n = len(instances)
        if n == 1:
            only = instances[0]
            return None if tried and only in tried else only
        if n == 0:
            return None
        start = self.next
        if start >= n:  # the picker outlives snapshots: the service may have lost instances since
            start = 0
        self.next = start + 1 if start + 1 < n else 0
        best: C | None = None
        best_key = 0
        for i in range(n):
            j = start + i
            state = instances[j - n if j >= n else j]
            if tried and state in tried:
                continue
            key = state.outstanding
            if state.down_until > now:
                key += DOWN_PENALTY
            if best is None or key < best_key:
                best = state
                best_key = key
        return best


def prefix_key(body: bytes) -> bytes | None:
    """A digest of the prompt prefix of an OpenAI-style JSON body: the first PREFIX_CHARS
    characters of the conversation before its last message (`messages`: what the instance has
    cached from earlier turns, the system prompt first), or of a single message or `prompt`.
    None when the body has no prompt to key on (then least outstanding decides)."""
    if not body:
        return None
    try:
        doc = json.loads(body)
    except ValueError:  # cut at BODY_MAX, or not JSON: key on the raw head
        return hashlib.blake2b(body[:PREFIX_CHARS], digest_size=12).digest() if body[:1] == b"{" else None
    if not isinstance(doc, dict):
        return None
    messages = doc.get("messages")
    if isinstance(messages, list) and messages:
        shared = messages[:-1] if len(messages) > 1 else messages
        text = "".join(f"{m.get('role')}\x00{m.get('content')}\x00" for m in shared if isinstance(m, dict))
    elif isinstance(doc.get("prompt"), str):
        text = doc["prompt"]
    else:
        return None
    return hashlib.blake2b(text[:PREFIX_CHARS].encode(), digest_size=12).digest()


class PrefixAffinity(Picker):
    """The instance that served the request's prompt prefix last, bounded by load; else least
    outstanding (see the module docstring)."""

    __slots__ = ("least", "table")
    wants_body = True

    def __init__(self) -> None:
        self.least = LeastOutstanding()
        self.table: OrderedDict[bytes, str] = OrderedDict()  # prefix digest -> instance addr

    def pick(
        self, instances: Sequence[C], now: float, tried: list[C] | None, request: PickedRequest
    ) -> C | None:
        least = self.least.pick(instances, now, tried, request)
        if least is None or len(instances) < 2:
            return least
        key = prefix_key(request.body_head())
        if key is None:
            return least
        table = self.table
        addr = table.get(key)
        if addr is not None and addr != least.addr:
            bound = LOAD_FACTOR * least.outstanding + LOAD_SLACK
            for state in instances:
                if state.addr == addr:
                    if (
                        state.outstanding <= bound
                        and state.down_until <= now
                        and not (tried and state in tried)
                    ):
                        table.move_to_end(key)
                        return state
                    break
        table[key] = least.addr
        table.move_to_end(key)
        if len(table) > AFFINITY_MAX:
            table.popitem(last=False)
        return least


PICKERS: Mapping[str, type[Picker]] = {DEFAULT_STRATEGY: LeastOutstanding, PREFIX_STRATEGY: PrefixAffinity}


def strategy_for(spec: Mapping[str, Any]) -> str:
    """The strategy a stored service spec selects (a key of `PICKERS`)."""
    metadata = spec.get("metadata")
    if isinstance(metadata, Mapping) and metadata.get("llm_routing") == "prefix":
        return PREFIX_STRATEGY
    return DEFAULT_STRATEGY


def new_picker(strategy: str) -> Picker:
    """A fresh picker for `strategy` (an unknown name, from a newer store: the default)."""
    return PICKERS.get(strategy, LeastOutstanding)()
