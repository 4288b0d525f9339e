"""The queue server's /metrics (Prometheus text) and the JSON the CLI and the autoscaler read.

Rendered by hand from the backend's statistics at scrape time plus this process's counters: no
module-level Prometheus registry, nothing to keep in step.
"""

from __future__ import annotations

import time
from typing import Any

from openeas.queue.items import INPUT, QUEUES, SINK, QueueStats
from openeas.queue.service import QueueService

_GAUGES = (
    ("openeas_queue_length", "Items waiting or in flight"),
    ("openeas_queue_in_flight", "Items handed to a consumer and not yet done"),
    ("openeas_queue_dead_letters", "Items given up on after queue.max_delivery tries"),
    ("openeas_queue_oldest_age_seconds", "Age of the oldest waiting item"),
)


def _gauges(st: QueueStats, now: float) -> tuple[float, ...]:
    """The values of _GAUGES, in its order."""
    age = now - st.oldest_created_at if st.oldest_created_at else 0.0
    return (st.length, st.in_flight, st.dead, age)


async def snapshot(svc: QueueService, instances: int, in_flight_local: int) -> dict[str, Any]:
    """Everything an operator (or the autoscaler) wants to know, as JSON."""
    now = time.time()
    out: dict[str, Any] = {
        "service": svc.settings.service,
        "instances": instances,
        "dispatching": in_flight_local,
        "last_activity": svc.counters.last_activity,
    }
    for q in QUEUES:
        st = await svc.backend.stats(q)
        out[q] = {
            "length": st.length,
            "in_flight": st.in_flight,
            "dead": st.dead,
            "first_index": st.first_index,
            "last_index": st.last_index,
            "oldest_age_s": round(now - st.oldest_created_at, 3) if st.oldest_created_at else 0.0,
            "max_length": svc.settings.limits(q).max_length,
        }
    c = svc.counters
    out["counters"] = {
        "put_input": c.puts[INPUT],
        "put_sink": c.puts[SINK],
        "delivered": c.delivered,
        "redelivered": c.redelivered,
        "retried": c.retried,
        "dead": c.dead,
        "completed": c.completed,
        "duplicates": c.duplicates,
        "rejected_full": c.rejected_full,
        "expired": c.expired,
    }
    return out


async def render(svc: QueueService, instances: int) -> str:
    now = time.time()
    name = svc.settings.service
    stats: dict[str, QueueStats] = {q: await svc.backend.stats(q) for q in QUEUES}
    lines: list[str] = []
    values = {q: _gauges(stats[q], now) for q in QUEUES}
    for i, (metric, help_text) in enumerate(_GAUGES):
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} gauge"]
        lines += [f'{metric}{{service="{name}",queue="{q}"}} {values[q][i]}' for q in QUEUES]
    c = svc.counters
    counters = (
        ("openeas_queue_puts_total", "Items put", None),
        (
            "openeas_queue_delivered_total",
            "Deliveries to instances (first tries and redeliveries)",
            c.delivered,
        ),
        (
            "openeas_queue_redelivered_total",
            "Deliveries of an item that had been delivered before",
            c.redelivered,
        ),
        ("openeas_queue_retried_total", "Failed tries put back for another delivery", c.retried),
        ("openeas_queue_dead_total", "Items that became dead letters", c.dead),
        ("openeas_queue_completed_total", "Results written to the sink", c.completed),
        ("openeas_queue_duplicates_total", "Results dropped: the item was already done", c.duplicates),
        ("openeas_queue_rejected_total", "Puts refused with 429 (queue full)", c.rejected_full),
        ("openeas_queue_expired_total", "Results removed past their time to live", c.expired),
    )
    for metric, help_text, count in counters:
        lines += [f"# HELP {metric} {help_text}", f"# TYPE {metric} counter"]
        if count is None:
            lines += [f'{metric}{{service="{name}",queue="{q}"}} {c.puts[q]}' for q in QUEUES]
        else:
            lines.append(f'{metric}{{service="{name}"}} {count}')
    lines += [
        "# HELP openeas_queue_instances Ready instances being fed",
        "# TYPE openeas_queue_instances gauge",
        f'openeas_queue_instances{{service="{name}"}} {instances}',
    ]
    return "\n".join(lines) + "\n"
