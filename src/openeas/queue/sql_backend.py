"""The embedded queue backend: the registry's own database (SQLite by default, PostgreSQL by URL).

Two tables of its own beside the registry's (`queue_items`, `queue_seqs`), never touching the
registry's change feed: queue traffic must not make gateways rebuild their snapshots. Each step is
one transaction; claims are one UPDATE that marks rows with a fresh claim token, so two queue
servers on one PostgreSQL never take the same item. Calls run on one worker thread per backend,
which keeps SQLite's single writer uncontended and the event loop free.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Float,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.engine import Row

from openeas.queue.items import (
    CLAIMED,
    DEAD,
    INPUT,
    READY,
    SINK,
    Item,
    Limits,
    PayloadTooLarge,
    QueueFull,
    QueueStats,
)
from openeas.store.registry import _sqlite_pragmas

metadata = MetaData()

queue_items = Table(
    "queue_items",
    metadata,
    Column("service", String(64), primary_key=True),
    Column("queue", String(16), primary_key=True),
    Column("idx", BigInteger, primary_key=True, autoincrement=False),
    Column("request_id", String(64), nullable=False, index=True),
    Column("priority", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
    Column("tags", Text, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("state", String(8), nullable=False),
    Column("consumer", String(128), nullable=False),
    Column("claim", String(40), nullable=False),
    Column("lease_until", Float, nullable=False),
    Column("deliveries", Integer, nullable=False),
)

queue_seqs = Table(
    "queue_seqs",
    metadata,
    Column("service", String(64), primary_key=True),
    Column("queue", String(16), primary_key=True),
    Column("last", BigInteger, nullable=False),
)

_C = queue_items.c


def _item(r: Row[Any]) -> Item:
    return Item(
        index=int(r.idx),
        request_id=r.request_id,
        data=bytes(r.data),
        tags=json.loads(r.tags),
        priority=int(r.priority),
        created_at=float(r.created_at),
        state=r.state,
        consumer=r.consumer,
        lease_until=float(r.lease_until),
        deliveries=int(r.deliveries),
    )


class SqlBackend:
    def __init__(self, url: str, service: str):
        self.service = service
        self.engine = create_engine(url, future=True)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        metadata.create_all(self.engine)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"queue-sql-{service}")

    async def _run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def _of(self, queue: str) -> Any:
        return and_(_C.service == self.service, _C.queue == queue)

    # -- writes ----------------------------------------------------------------------------
    def _next_index(self, conn: Connection, queue: str) -> int:
        seq = queue_seqs.c
        where = and_(seq.service == self.service, seq.queue == queue)
        if conn.execute(update(queue_seqs).where(where).values(last=seq.last + 1)).rowcount == 0:
            conn.execute(insert(queue_seqs).values(service=self.service, queue=queue, last=1))
            return 1
        return int(conn.execute(select(seq.last).where(where)).scalar_one())

    def _insert(
        self,
        conn: Connection,
        queue: str,
        data: bytes,
        tags: dict[str, str],
        priority: int,
        request_id: str,
    ) -> Item:
        idx = self._next_index(conn, queue)
        now = time.time()
        conn.execute(
            insert(queue_items).values(
                service=self.service,
                queue=queue,
                idx=idx,
                request_id=request_id,
                priority=priority,
                data=data,
                tags=json.dumps(tags),
                created_at=now,
                state=READY,
                consumer="",
                claim="",
                lease_until=0.0,
                deliveries=0,
            )
        )
        return Item(idx, request_id, data, tags, priority, now)

    def _put(
        self,
        queue: str,
        data: bytes,
        tags: dict[str, str],
        priority: int,
        limits: Limits,
        request_id: str | None,
    ) -> Item:
        if len(data) > limits.max_payload_bytes:
            raise PayloadTooLarge(len(data), limits.max_payload_bytes)
        with self.engine.begin() as conn:
            live = and_(self._of(queue), _C.state != DEAD)
            length = int(conn.execute(select(func.count()).where(live)).scalar_one())
            if length >= limits.max_length:
                if not limits.auto_evict:
                    raise QueueFull(queue, limits.max_length)
                oldest = select(_C.idx).where(self._of(queue), _C.state == READY)
                oldest = oldest.order_by(_C.idx).limit(length - limits.max_length + 1)
                victims = [int(i) for i in conn.execute(oldest).scalars()]
                if not victims:  # everything is in flight: nothing may be dropped
                    raise QueueFull(queue, limits.max_length)
                conn.execute(delete(queue_items).where(self._of(queue), _C.idx.in_(victims)))
            return self._insert(conn, queue, data, tags, priority, request_id or str(uuid.uuid4()))

    async def put(
        self,
        queue: str,
        data: bytes,
        tags: dict[str, str],
        priority: int,
        limits: Limits,
        request_id: str | None = None,
    ) -> Item:
        item: Item = await self._run(self._put, queue, data, tags, priority, limits, request_id)
        return item

    def _delete(self, queue: str, indexes: list[int]) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(delete(queue_items).where(self._of(queue), _C.idx.in_(indexes))).rowcount)

    async def delete(self, queue: str, indexes: list[int]) -> int:
        n: int = await self._run(self._delete, queue, indexes)
        return n

    def _truncate(self, queue: str, before: int) -> int:
        with self.engine.begin() as conn:
            return int(conn.execute(delete(queue_items).where(self._of(queue), _C.idx < before)).rowcount)

    async def truncate(self, queue: str, before: int) -> int:
        n: int = await self._run(self._truncate, queue, before)
        return n

    def _claim(self, queue: str, consumer: str, n: int, lease_s: float, start: int) -> list[Item]:
        token = uuid.uuid4().hex
        with self.engine.begin() as conn:
            pick = (
                select(_C.idx)
                .where(self._of(queue), _C.state == READY, _C.idx >= start)
                .order_by(_C.priority.desc(), _C.idx)
                .limit(n)
            )
            conn.execute(
                update(queue_items)
                .where(self._of(queue), _C.state == READY, _C.idx.in_(pick.scalar_subquery()))
                .values(
                    state=CLAIMED,
                    consumer=consumer,
                    claim=token,
                    lease_until=time.time() + lease_s,
                    deliveries=_C.deliveries + 1,
                )
            )
            rows = conn.execute(
                select(queue_items)
                .where(self._of(queue), _C.claim == token, _C.state == CLAIMED)
                .order_by(_C.priority.desc(), _C.idx)
            ).all()
        return [_item(r) for r in rows]

    async def claim(self, queue: str, consumer: str, n: int, lease_s: float, start: int = 0) -> list[Item]:
        items: list[Item] = await self._run(self._claim, queue, consumer, n, lease_s, start)
        return items

    def _release(self, queue: str, index: int, consumer: str, max_delivery: int, count: bool) -> str:
        held = and_(self._of(queue), _C.idx == index, _C.state == CLAIMED, _C.consumer == consumer)
        with self.engine.begin() as conn:
            row = conn.execute(select(_C.deliveries).where(held)).first()
            if row is None:
                return ""
            deliveries = int(row.deliveries) if count else max(int(row.deliveries) - 1, 0)
            state = DEAD if deliveries >= max_delivery else READY
            conn.execute(
                update(queue_items)
                .where(held)
                .values(state=state, consumer="", claim="", lease_until=0.0, deliveries=deliveries)
            )
            return state

    async def release(
        self, queue: str, index: int, consumer: str, max_delivery: int, count: bool = True
    ) -> str:
        state: str = await self._run(self._release, queue, index, consumer, max_delivery, count)
        return state

    def _release_consumer(self, queue: str, consumer: str) -> int:
        held = and_(self._of(queue), _C.state == CLAIMED, _C.consumer == consumer)
        with self.engine.begin() as conn:
            # the consumer went away: this try does not count against max_delivery
            values = {
                "state": READY,
                "consumer": "",
                "claim": "",
                "lease_until": 0.0,
                "deliveries": func.max(_C.deliveries - 1, 0) if self._sqlite else _greatest(),
            }
            return int(conn.execute(update(queue_items).where(held).values(**values)).rowcount)

    @property
    def _sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    async def release_consumer(self, queue: str, consumer: str) -> int:
        n: int = await self._run(self._release_consumer, queue, consumer)
        return n

    def _complete(self, index: int, consumer: str, data: bytes, tags: dict[str, str]) -> Item | None:
        held = and_(self._of(INPUT), _C.idx == index, _C.state == CLAIMED, _C.consumer == consumer)
        with self.engine.begin() as conn:
            row = conn.execute(select(_C.request_id, _C.priority).where(held)).first()
            if row is None:
                return None
            conn.execute(delete(queue_items).where(held))
            return self._insert(conn, SINK, data, tags, int(row.priority), row.request_id)

    async def complete(self, index: int, consumer: str, data: bytes, tags: dict[str, str]) -> Item | None:
        item: Item | None = await self._run(self._complete, index, consumer, data, tags)
        return item

    def _reap(self, queue: str, now: float, max_delivery: int) -> tuple[int, int]:
        expired = and_(self._of(queue), _C.state == CLAIMED, _C.lease_until < now)
        cleared = {"consumer": "", "claim": "", "lease_until": 0.0}
        with self.engine.begin() as conn:
            dead = conn.execute(
                update(queue_items)
                .where(expired, _C.deliveries >= max_delivery)
                .values(state=DEAD, **cleared)
            ).rowcount
            requeued = conn.execute(
                update(queue_items).where(expired).values(state=READY, **cleared)
            ).rowcount
        return int(requeued), int(dead)

    async def reap(self, queue: str, now: float, max_delivery: int) -> tuple[int, int]:
        out: tuple[int, int] = await self._run(self._reap, queue, now, max_delivery)
        return out

    def _expire(self, queue: str, older_than: float) -> int:
        with self.engine.begin() as conn:
            old = and_(self._of(queue), _C.created_at < older_than)
            return int(conn.execute(delete(queue_items).where(old)).rowcount)

    async def expire(self, queue: str, older_than: float) -> int:
        n: int = await self._run(self._expire, queue, older_than)
        return n

    def _retry_dead(self, queue: str, indexes: list[int] | None) -> int:
        where = and_(self._of(queue), _C.state == DEAD)
        if indexes is not None:
            where = and_(where, _C.idx.in_(indexes))
        with self.engine.begin() as conn:
            return int(
                conn.execute(update(queue_items).where(where).values(state=READY, deliveries=0)).rowcount
            )

    async def retry_dead(self, queue: str, indexes: list[int] | None) -> int:
        n: int = await self._run(self._retry_dead, queue, indexes)
        return n

    # -- reads -----------------------------------------------------------------------------
    def _get(self, queue: str, index: int, length: int, request_id: str | None) -> list[Item]:
        q = select(queue_items).where(self._of(queue), _C.state != DEAD)
        q = q.where(_C.request_id == request_id) if request_id else q.where(_C.idx >= index)
        with self.engine.connect() as conn:
            return [_item(r) for r in conn.execute(q.order_by(_C.idx).limit(length)).all()]

    async def get(self, queue: str, index: int, length: int, request_id: str | None = None) -> list[Item]:
        items: list[Item] = await self._run(self._get, queue, index, length, request_id)
        return items

    def _search(self, queue: str, index: int) -> Item | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(queue_items).where(self._of(queue), _C.idx == index)).first()
        return None if row is None else _item(row)

    async def search(self, queue: str, index: int) -> Item | None:
        item: Item | None = await self._run(self._search, queue, index)
        return item

    def _stats(self, queue: str) -> QueueStats:
        with self.engine.connect() as conn:
            counts: dict[str, int] = dict(
                conn.execute(select(_C.state, func.count()).where(self._of(queue)).group_by(_C.state)).all()
            )
            first = conn.execute(select(func.min(_C.idx)).where(self._of(queue), _C.state != DEAD)).scalar()
            oldest = conn.execute(
                select(func.min(_C.created_at)).where(self._of(queue), _C.state == READY)
            ).scalar()
            seq = queue_seqs.c
            last = conn.execute(
                select(seq.last).where(seq.service == self.service, seq.queue == queue)
            ).scalar()
        ready, claimed = int(counts.get(READY, 0)), int(counts.get(CLAIMED, 0))
        return QueueStats(
            length=ready + claimed,
            in_flight=claimed,
            dead=int(counts.get(DEAD, 0)),
            first_index=int(first or 0),
            last_index=int(last or 0),
            oldest_created_at=None if oldest is None else float(oldest),
        )

    def _length(self, queue: str) -> int:
        with self.engine.connect() as conn:
            live = and_(self._of(queue), _C.state != DEAD)
            return int(conn.execute(select(func.count()).where(live)).scalar_one())

    async def length(self, queue: str) -> int:
        n: int = await self._run(self._length, queue)
        return n

    async def stats(self, queue: str) -> QueueStats:
        st: QueueStats = await self._run(self._stats, queue)
        return st

    def _dead(self, queue: str, limit: int) -> list[Item]:
        q = select(queue_items).where(self._of(queue), _C.state == DEAD).order_by(_C.idx).limit(limit)
        with self.engine.connect() as conn:
            return [_item(r) for r in conn.execute(q).all()]

    async def dead(self, queue: str, limit: int) -> list[Item]:
        items: list[Item] = await self._run(self._dead, queue, limit)
        return items

    def _purge(self) -> None:
        with self.engine.begin() as conn:
            conn.execute(delete(queue_items).where(_C.service == self.service))
            conn.execute(delete(queue_seqs).where(queue_seqs.c.service == self.service))

    async def purge(self) -> None:
        await self._run(self._purge)

    async def close(self) -> None:
        await self._run(self.engine.dispose)
        self._pool.shutdown(wait=False)


def _greatest() -> Any:
    return func.greatest(_C.deliveries - 1, 0)
