"""Rolling-update arithmetic (no I/O): how many new instances to start and old ones to stop.

EAS's `metadata.rolling_strategy` with Kubernetes Deployment semantics:

- at most `desired + surge` instances exist at once (old serving + new, starting or ready);
  instances being stopped do not count, they are out of routing already;
- at least `desired - unavailable` instances are ready (old + new) unless fewer were ready to
  begin with;
- surge and unavailable both 0 would allow no step at all: one extra instance is allowed then.

A new instance that never becomes ready holds its place in the surge budget, so the update
pauses there with the old instances still serving (unless `unavailable` lets some go).
"""

from __future__ import annotations


def plan_rollout(
    desired: int, old_ready: int, new_ready: int, new_starting: int, surge: int, unavailable: int
) -> tuple[int, int]:
    """(new instances to start, ready old instances to stop) for one reconcile pass.

    `old_ready`: ready instances of earlier specs (old ones that are not ready serve nothing and
    are stopped by the caller without asking); `new_ready` / `new_starting`: instances of the
    current spec that are ready / not ready yet (starting, failing, restarting).
    """
    desired = max(0, desired)
    unavailable = min(max(0, unavailable), desired)
    surge = max(0, surge)
    if surge == 0 and unavailable == 0:
        surge = 1
    new_total = new_ready + new_starting
    floor = desired - unavailable  # ready instances to keep
    stop = max(0, min(old_ready, old_ready + new_ready - floor))
    room = desired + surge - (old_ready - stop) - new_total
    start = max(0, min(desired - new_total, room))
    return start, stop
