"""Instance picking strategies: which ready instance of a service a request goes to (no I/O).

A `Picker` is asked once per attempt of a request, with the service's instances, the loop time,
the instances already tried for this request (a refused connection, a stale pooled one) and the
request itself (method, target, headers: what a content-aware strategy keys on). It returns one
instance or None when every instance was tried. The gateway keeps one picker per service per
routing snapshot (`routes.RouteEntry.picker`), so a strategy may keep state (a cursor, a table).

Strategies, by the name a service's spec selects (`strategy_for`):

- `least_outstanding` (every service today): the instance with the fewest requests assigned
  (in flight + queued there); ties are broken round-robin; an instance refused a connection in
  the last second is chosen only when nothing else is left.

To add one: a subclass of `Picker` in this file, its name in `PICKERS`, and the rule that selects
it in `strategy_for`. Nothing else in the gateway changes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, TypeVar

DOWN_PENALTY = 1 << 30  # a marked-down instance is picked only when nothing else is left
DEFAULT_STRATEGY = "least_outstanding"


class Candidate(Protocol):
    """What a strategy reads of an instance (`instances.UpstreamState`)."""

    outstanding: int  # requests assigned: in flight + waiting in its queue
    down_until: float  # loop time until which a refused connection marks it down


class PickedRequest(Protocol):
    """What a strategy may read of the request (`exchange.Exchange`)."""

    method: bytes
    target: bytes  # the forwarded path and query
    headers: list[tuple[bytes, bytes]]


C = TypeVar("C", bound=Candidate)


class Picker(ABC):
    """One service's strategy (one object per service per routing snapshot)."""

    __slots__ = ()

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


PICKERS: Mapping[str, type[Picker]] = {DEFAULT_STRATEGY: LeastOutstanding}


def strategy_for(spec: Mapping[str, Any]) -> str:
    """The strategy a stored service spec selects (a key of `PICKERS`)."""
    return DEFAULT_STRATEGY


def new_picker(strategy: str) -> Picker:
    """A fresh picker for `strategy` (an unknown name, from a newer store: the default)."""
    return PICKERS.get(strategy, LeastOutstanding)()
