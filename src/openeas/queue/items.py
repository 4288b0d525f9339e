"""What a queue holds and what its backends return: items, limits, statistics, errors.

Both backends (SQL in `sql_backend.py`, Redis in `redis_backend.py`) speak these types, so the
HTTP API, the dispatcher and the CLI never know which one runs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

INPUT = "input"
SINK = "sink"
QUEUES = (INPUT, SINK)

# item states: waiting to be taken, taken by a consumer (an instance slot or a watcher), or given
# up on after max_delivery tries (a dead letter, kept until retried or deleted)
READY = "ready"
CLAIMED = "claimed"
DEAD = "dead"

# tag names the SDK and EAS's docs use on items
TAG_REQUEST_ID = "requestId"
TAG_LAST_CODE = "lastCode"
TAG_SOURCE_INDEX = "sourceIndex"
TAG_PRIORITY = "_priority_"


@dataclass(frozen=True, slots=True)
class Item:
    index: int
    request_id: str
    data: bytes
    tags: dict[str, str]
    priority: int
    created_at: float
    state: str = READY
    consumer: str = ""
    lease_until: float = 0.0
    deliveries: int = 0

    def with_tags(self) -> dict[str, str]:
        """The tags as the SDK sees them: the stored ones plus the request id."""
        return {**self.tags, TAG_REQUEST_ID: self.request_id}


@dataclass(frozen=True, slots=True)
class Limits:
    max_length: int
    max_payload_bytes: int
    auto_evict: bool = False


@dataclass(frozen=True, slots=True)
class QueueStats:
    length: int  # waiting + in flight (dead letters not counted)
    in_flight: int
    dead: int
    first_index: int  # 0 when empty
    last_index: int  # the last index ever given (0 when none yet)
    oldest_created_at: float | None  # of the oldest waiting item


@dataclass(slots=True)
class Counters:
    """Per-process counts for /metrics (each queue server counts what it did)."""

    puts: dict[str, int] = field(default_factory=lambda: {INPUT: 0, SINK: 0})
    delivered: int = 0
    redelivered: int = 0
    retried: int = 0  # failed tries put back for another delivery
    dead: int = 0
    completed: int = 0
    duplicates: int = 0  # results that arrived for an item someone else already completed
    rejected_full: int = 0
    expired: int = 0
    last_activity: float | None = None  # unix time of the last put into the input or result


class QueueFull(Exception):
    def __init__(self, queue: str, max_length: int):
        self.queue = queue
        self.max_length = max_length
        super().__init__(f"the {queue} queue is full ({max_length} items)")


class PayloadTooLarge(Exception):
    def __init__(self, size: int, limit: int):
        self.size = size
        self.limit = limit
        super().__init__(f"the body is {size} bytes, over this queue's limit of {limit} bytes")
