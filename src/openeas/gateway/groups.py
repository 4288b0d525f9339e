"""Service groups: weights and the per-request pick among a group's members (no I/O).

Services whose `metadata.group` is G form group G. `/api/predict/<G>[/sub]` splits requests
across the members by weight; `/api/predict/<G>.<service>[/sub]` reaches one member.

Weights (the group's `traffic_mode`):

- `auto`: a member's weight is its number of ready instances (as EAS: by instance count);
- `customized`: the weight set for the member in the group (0..1000; a member with no weight set
  gets `DEFAULT_WEIGHT`); 0 sends it no group traffic, and -1 excludes it from the group's
  traffic as well (it is still reachable as `<G>.<service>`).

In both modes a member with no ready instance gets weight 0, so group traffic goes to members
that can answer. The pick is smooth weighted round robin (nginx's): deterministic, O(members) per
request, and spreads a member's share evenly in time (90/10 gives 9 of every 10 to the first,
never 90 in a row).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

TRAFFIC_MODES = ("auto", "customized")
DEFAULT_WEIGHT = 100
MIN_WEIGHT = -1
MAX_WEIGHT = 1000

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class GroupRoute:
    """A group as the routing snapshot holds it (members bound to this gateway, sorted)."""

    name: str
    token: bytes  # b"": the group has no row in the store yet (only member paths with member tokens)
    traffic_mode: str
    weights: dict[str, int] = field(default_factory=dict)
    members: tuple[str, ...] = ()
    old_token: bytes = b""  # the previous token during a rotation (also accepted); b"": none


def effective_weights(
    traffic_mode: str, weights: dict[str, int], members: Sequence[tuple[str, int]]
) -> list[int]:
    """The weight of each member, given (name, ready instances) pairs, in the same order."""
    out: list[int] = []
    customized = traffic_mode == "customized"
    for name, ready in members:
        if ready <= 0:
            out.append(0)
        elif customized:
            out.append(max(0, min(weights.get(name, DEFAULT_WEIGHT), MAX_WEIGHT)))
        else:
            out.append(ready)
    return out


def check_weight(value: int) -> int:
    """`value` when it is a valid member weight (-1..1000), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or not MIN_WEIGHT <= value <= MAX_WEIGHT:
        raise ValueError(f"a member weight is an integer from {MIN_WEIGHT} to {MAX_WEIGHT}, not {value!r}")
    return value


class SmoothWeightedRR(Generic[T]):
    """Smooth weighted round robin over `items`; items with weight <= 0 are never picked."""

    __slots__ = ("current", "items", "total", "weights")

    def __init__(self, items: Sequence[T], weights: Sequence[int]) -> None:
        pairs = [(item, w) for item, w in zip(items, weights, strict=True) if w > 0]
        self.items: list[T] = [item for item, _ in pairs]
        self.weights: list[int] = [w for _, w in pairs]
        self.current: list[int] = [0] * len(pairs)
        self.total = sum(self.weights)

    def carry_over(self, old: SmoothWeightedRR[Any], same: bool) -> None:
        """Continue `old`'s rotation when `same` (the same members with the same weights, new
        objects after a snapshot swap): frequent swaps must not restart the cycle, which would
        favour the heaviest member (a 90/10 split restarted every 4 picks never reaches the 10)."""
        if same and len(old.current) == len(self.current):
            self.current = list(old.current)

    def pick(self) -> T | None:
        n = len(self.items)
        if n <= 1:
            return self.items[0] if n else None
        current = self.current
        weights = self.weights
        best = 0
        best_value = current[0] + weights[0]
        current[0] = best_value
        for i in range(1, n):
            value = current[i] + weights[i]
            current[i] = value
            if value > best_value:
                best = i
                best_value = value
        current[best] -= self.total
        return self.items[best]
