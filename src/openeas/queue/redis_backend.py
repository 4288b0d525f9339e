"""The Redis queue backend (`--redis-url`): the same semantics as the SQL one, for several machines.

Layout per queue, under `openeas:queue:<service>:<queue>:`: `seq` (last index), `item:<i>` (a
hash: request id, priority, data, tags, created, state, consumer, deliveries), sorted sets
`live` (waiting + in flight, by index), `ready` (waiting; priority first, then index), `claimed`
(by lease deadline) and `dead`, and `rid` (request id -> index). Every step that changes more than
one key is one Lua script, so it is atomic on the server. The scripts name keys they build from a
prefix argument, which needs a single Redis (not Redis Cluster): docs/async.md.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import Any

from redis.asyncio import Redis

from openeas.queue.items import (
    CLAIMED,
    DEAD,
    INPUT,
    SINK,
    Item,
    Limits,
    PayloadTooLarge,
    QueueFull,
    QueueStats,
)

# Shared Lua helpers. Priorities are 0 (normal) or 1 (`_priority_=1`): a high-priority item's
# score sits below every normal one's.
_PRELUDE = """
local function score(idx, prio)
  if tonumber(prio) > 0 then return tonumber(idx) - 1e13 end
  return tonumber(idx)
end
local function drop(p, idx)
  local rid = redis.call('HGET', p..'item:'..idx, 'rid')
  if not rid then return 0 end
  redis.call('ZREM', p..'ready', idx)
  redis.call('ZREM', p..'claimed', idx)
  redis.call('ZREM', p..'dead', idx)
  redis.call('ZREM', p..'live', idx)
  if redis.call('HGET', p..'rid', rid) == tostring(idx) then redis.call('HDEL', p..'rid', rid) end
  redis.call('DEL', p..'item:'..idx)
  return 1
end
local function oldest_ready(p)
  local best = nil
  local hi = redis.call('ZRANGEBYSCORE', p..'ready', '-inf', '(0', 'LIMIT', 0, 1)
  local lo = redis.call('ZRANGEBYSCORE', p..'ready', '0', '+inf', 'LIMIT', 0, 1)
  if hi[1] then best = tonumber(hi[1]) end
  if lo[1] and (best == nil or tonumber(lo[1]) < best) then best = tonumber(lo[1]) end
  return best
end
local function insert(p, rid, prio, data, tags, now)
  local idx = redis.call('INCR', p..'seq')
  redis.call('HSET', p..'item:'..idx, 'rid', rid, 'prio', prio, 'data', data, 'tags', tags,
    'created', now, 'state', 'ready', 'consumer', '', 'deliveries', '0')
  redis.call('ZADD', p..'ready', score(idx, prio), idx)
  redis.call('ZADD', p..'live', idx, idx)
  redis.call('HSET', p..'rid', rid, idx)
  return idx
end
local function to_ready(p, idx, prio)
  redis.call('ZREM', p..'claimed', idx)
  redis.call('ZREM', p..'dead', idx)
  redis.call('ZADD', p..'ready', score(idx, prio), idx)
  redis.call('ZADD', p..'live', idx, idx)
  redis.call('HSET', p..'item:'..idx, 'state', 'ready', 'consumer', '')
end
local function to_dead(p, idx)
  redis.call('ZREM', p..'claimed', idx)
  redis.call('ZREM', p..'ready', idx)
  redis.call('ZREM', p..'live', idx)
  redis.call('ZADD', p..'dead', idx, idx)
  redis.call('HSET', p..'item:'..idx, 'state', 'dead', 'consumer', '')
end
"""

# ARGV: prefix, data, tags, prio, rid, now, max_length, evict -> index, or -1 when full
_PUT = (
    _PRELUDE
    + """
local p = ARGV[1]
local max = tonumber(ARGV[7])
local len = redis.call('ZCARD', p..'live')
while len >= max do
  if ARGV[8] ~= '1' then return -1 end
  local victim = oldest_ready(p)
  if not victim then return -1 end
  drop(p, victim)
  len = len - 1
end
return insert(p, ARGV[5], ARGV[4], ARGV[2], ARGV[3], ARGV[6])
"""
)

# ARGV: prefix, consumer, n, lease_until, start
# -> flat list of (idx, rid, prio, data, tags, created, deliveries)
_CLAIM = (
    _PRELUDE
    + """
local p = ARGV[1]
local n = tonumber(ARGV[3])
local start = tonumber(ARGV[5])
local out = {}
local taken = 0
local offset = 0
while taken < n do
  local batch = redis.call('ZRANGE', p..'ready', offset, offset + 99)
  if #batch == 0 then break end
  offset = offset + #batch
  for _, idx in ipairs(batch) do
    if taken < n and tonumber(idx) >= start then
      local key = p..'item:'..idx
      redis.call('ZREM', p..'ready', idx)
      offset = offset - 1
      redis.call('ZADD', p..'claimed', ARGV[4], idx)
      redis.call('HSET', key, 'state', 'claimed', 'consumer', ARGV[2])
      local d = redis.call('HINCRBY', key, 'deliveries', 1)
      local f = redis.call('HMGET', key, 'rid', 'prio', 'data', 'tags', 'created')
      for _, v in ipairs({idx, f[1], f[2], f[3], f[4], f[5], tostring(d)}) do out[#out + 1] = v end
      taken = taken + 1
    end
  end
end
return out
"""
)

# ARGV: prefix, idx, consumer, max_delivery, count (1/0) -> new state or ''
_RELEASE = (
    _PRELUDE
    + """
local p = ARGV[1]
local key = p..'item:'..ARGV[2]
local f = redis.call('HMGET', key, 'state', 'consumer', 'deliveries', 'prio')
if f[1] ~= 'claimed' or f[2] ~= ARGV[3] then return '' end
local d = tonumber(f[3])
if ARGV[5] == '0' and d > 0 then d = d - 1; redis.call('HSET', key, 'deliveries', d) end
if d >= tonumber(ARGV[4]) then to_dead(p, ARGV[2]); return 'dead' end
to_ready(p, ARGV[2], f[4])
return 'ready'
"""
)

# ARGV: prefix, consumer -> how many went back (their try not counted)
_RELEASE_CONSUMER = (
    _PRELUDE
    + """
local p = ARGV[1]
local n = 0
for _, idx in ipairs(redis.call('ZRANGE', p..'claimed', 0, -1)) do
  local key = p..'item:'..idx
  local f = redis.call('HMGET', key, 'consumer', 'deliveries', 'prio')
  if f[1] == ARGV[2] then
    to_ready(p, idx, f[3])
    if tonumber(f[2]) > 0 then redis.call('HINCRBY', key, 'deliveries', -1) end
    n = n + 1
  end
end
return n
"""
)

# ARGV: input prefix, sink prefix, idx, consumer, data, tags, now -> sink index or -1
_COMPLETE = (
    _PRELUDE
    + """
local p = ARGV[1]
local key = p..'item:'..ARGV[3]
local f = redis.call('HMGET', key, 'state', 'consumer', 'rid', 'prio')
if f[1] ~= 'claimed' or f[2] ~= ARGV[4] then return -1 end
drop(p, ARGV[3])
return insert(ARGV[2], f[3], f[4], ARGV[5], ARGV[6], ARGV[7])
"""
)

# ARGV: prefix, now, max_delivery -> {requeued, dead}
_REAP = (
    _PRELUDE
    + """
local p = ARGV[1]
local requeued, dead = 0, 0
for _, idx in ipairs(redis.call('ZRANGEBYSCORE', p..'claimed', '-inf', '('..ARGV[2])) do
  local f = redis.call('HMGET', p..'item:'..idx, 'deliveries', 'prio')
  if tonumber(f[1]) >= tonumber(ARGV[3]) then to_dead(p, idx); dead = dead + 1
  else to_ready(p, idx, f[2]); requeued = requeued + 1 end
end
return {requeued, dead}
"""
)

# ARGV: prefix, older_than -> removed (items are created in index order)
_EXPIRE = (
    _PRELUDE
    + """
local p = ARGV[1]
local n = 0
while true do
  local first = redis.call('ZRANGE', p..'live', 0, 0)
  if not first[1] then break end
  local created = tonumber(redis.call('HGET', p..'item:'..first[1], 'created'))
  if created == nil or created >= tonumber(ARGV[2]) then break end
  n = n + drop(p, first[1])
end
return n
"""
)

# ARGV: prefix, idx... -> removed
_DELETE = (
    _PRELUDE
    + """
local n = 0
for i = 2, #ARGV do n = n + drop(ARGV[1], ARGV[i]) end
return n
"""
)

# ARGV: prefix, before -> removed
_TRUNCATE = (
    _PRELUDE
    + """
local p = ARGV[1]
local n = 0
for _, set in ipairs({'live', 'dead'}) do
  for _, idx in ipairs(redis.call('ZRANGEBYSCORE', p..set, '-inf', '('..ARGV[2])) do n = n + drop(p, idx) end
end
return n
"""
)

# ARGV: prefix, all(1/0), idx... -> how many wait again
_RETRY_DEAD = (
    _PRELUDE
    + """
local p = ARGV[1]
local list = {}
if ARGV[2] == '1' then list = redis.call('ZRANGE', p..'dead', 0, -1) else
  for i = 3, #ARGV do list[#list + 1] = ARGV[i] end end
local n = 0
for _, idx in ipairs(list) do
  local key = p..'item:'..idx
  local f = redis.call('HMGET', key, 'state', 'prio')
  if f[1] == 'dead' then
    to_ready(p, idx, f[2]); redis.call('HSET', key, 'deliveries', '0'); n = n + 1
  end
end
return n
"""
)

# ARGV: prefix -> {live, claimed, dead, first, last, oldest ready created or ''}
_STATS = (
    _PRELUDE
    + """
local p = ARGV[1]
local first = redis.call('ZRANGE', p..'live', 0, 0)
local oldest = oldest_ready(p)
local created = ''
if oldest then created = redis.call('HGET', p..'item:'..oldest, 'created') end
return {redis.call('ZCARD', p..'live'), redis.call('ZCARD', p..'claimed'), redis.call('ZCARD', p..'dead'),
  first[1] or '0', redis.call('GET', p..'seq') or '0', created}
"""
)

_FIELDS = ("rid", "prio", "data", "tags", "created", "state", "consumer", "deliveries")


def _s(b: Any) -> str:
    return b.decode() if isinstance(b, bytes) else str(b)


class RedisBackend:
    def __init__(self, url: str, service: str):
        self.service = service
        self.redis = Redis.from_url(url, decode_responses=False)
        self._scripts = {
            name: self.redis.register_script(src)
            for name, src in {
                "put": _PUT,
                "claim": _CLAIM,
                "release": _RELEASE,
                "release_consumer": _RELEASE_CONSUMER,
                "complete": _COMPLETE,
                "reap": _REAP,
                "expire": _EXPIRE,
                "delete": _DELETE,
                "truncate": _TRUNCATE,
                "retry_dead": _RETRY_DEAD,
                "stats": _STATS,
            }.items()
        }

    def _p(self, queue: str) -> str:
        return f"openeas:queue:{self.service}:{queue}:"

    async def _call(self, name: str, *args: Any) -> Any:
        return await self._scripts[name](keys=[], args=list(args))

    async def put(
        self,
        queue: str,
        data: bytes,
        tags: dict[str, str],
        priority: int,
        limits: Limits,
        request_id: str | None = None,
    ) -> Item:
        if len(data) > limits.max_payload_bytes:
            raise PayloadTooLarge(len(data), limits.max_payload_bytes)
        rid = request_id or str(uuid.uuid4())
        now = time.time()
        prio = 1 if priority > 0 else 0
        idx = int(
            await self._call(
                "put",
                self._p(queue),
                data,
                json.dumps(tags),
                prio,
                rid,
                repr(now),
                limits.max_length,
                "1" if limits.auto_evict else "0",
            )
        )
        if idx < 0:
            raise QueueFull(queue, limits.max_length)
        return Item(idx, rid, data, tags, prio, now)

    async def _items(self, queue: str, indexes: list[Any]) -> list[Item]:
        if not indexes:
            return []
        pipe = self.redis.pipeline(transaction=False)
        for idx in indexes:
            pipe.hmget(self._p(queue) + "item:" + _s(idx), *_FIELDS)
        out = []
        for idx, f in zip(indexes, await pipe.execute(), strict=True):
            if f[0] is None:
                continue  # removed between the two reads
            out.append(
                Item(
                    index=int(idx),
                    request_id=_s(f[0]),
                    priority=int(f[1]),
                    data=bytes(f[2]),
                    tags=json.loads(f[3]),
                    created_at=float(f[4]),
                    state=_s(f[5]),
                    consumer=_s(f[6]),
                    deliveries=int(f[7]),
                )
            )
        return out

    async def get(self, queue: str, index: int, length: int, request_id: str | None = None) -> list[Item]:
        p = self._p(queue)
        if request_id:
            idx = await self.redis.hget(p + "rid", request_id)
            items = await self._items(queue, [idx] if idx is not None else [])
        else:
            found = await self.redis.zrangebyscore(p + "live", index, "+inf", start=0, num=length)
            items = await self._items(queue, list(found))
        return [i for i in items if i.state != DEAD]

    async def search(self, queue: str, index: int) -> Item | None:
        items = await self._items(queue, [index])
        return items[0] if items else None

    async def delete(self, queue: str, indexes: list[int]) -> int:
        return int(await self._call("delete", self._p(queue), *indexes)) if indexes else 0

    async def truncate(self, queue: str, before: int) -> int:
        return int(await self._call("truncate", self._p(queue), before))

    async def claim(self, queue: str, consumer: str, n: int, lease_s: float, start: int = 0) -> list[Item]:
        flat = await self._call("claim", self._p(queue), consumer, n, repr(time.time() + lease_s), start)
        out = []
        for i in range(0, len(flat), 7):
            idx, rid, prio, data, tags, created, deliveries = flat[i : i + 7]
            out.append(
                Item(
                    index=int(idx),
                    request_id=_s(rid),
                    priority=int(prio),
                    data=bytes(data),
                    tags=json.loads(tags),
                    created_at=float(created),
                    state=CLAIMED,
                    consumer=consumer,
                    deliveries=int(deliveries),
                )
            )
        return out

    async def release(
        self, queue: str, index: int, consumer: str, max_delivery: int, count: bool = True
    ) -> str:
        return _s(
            await self._call("release", self._p(queue), index, consumer, max_delivery, "1" if count else "0")
        )

    async def release_consumer(self, queue: str, consumer: str) -> int:
        return int(await self._call("release_consumer", self._p(queue), consumer))

    async def complete(self, index: int, consumer: str, data: bytes, tags: dict[str, str]) -> Item | None:
        now = time.time()
        idx = int(
            await self._call(
                "complete", self._p(INPUT), self._p(SINK), index, consumer, data, json.dumps(tags), repr(now)
            )
        )
        if idx < 0:
            return None
        items = await self._items(SINK, [idx])
        return items[0] if items else Item(idx, "", data, tags, 0, now)

    async def reap(self, queue: str, now: float, max_delivery: int) -> tuple[int, int]:
        requeued, dead = await self._call("reap", self._p(queue), repr(now), max_delivery)
        return int(requeued), int(dead)

    async def expire(self, queue: str, older_than: float) -> int:
        return int(await self._call("expire", self._p(queue), repr(older_than)))

    async def stats(self, queue: str) -> QueueStats:
        live, claimed, dead, first, last, created = await self._call("stats", self._p(queue))
        return QueueStats(
            length=int(live),
            in_flight=int(claimed),
            dead=int(dead),
            first_index=int(first),
            last_index=int(last),
            oldest_created_at=float(created) if _s(created) else None,
        )

    async def length(self, queue: str) -> int:
        return int(await self.redis.zcard(self._p(queue) + "live"))

    async def dead(self, queue: str, limit: int) -> list[Item]:
        found = await self.redis.zrange(self._p(queue) + "dead", 0, limit - 1)
        return await self._items(queue, list(found))

    async def retry_dead(self, queue: str, indexes: list[int] | None) -> int:
        if indexes is None:
            return int(await self._call("retry_dead", self._p(queue), "1"))
        return int(await self._call("retry_dead", self._p(queue), "0", *indexes))

    async def purge(self) -> None:
        keys = [k async for k in self.redis.scan_iter(match=f"openeas:queue:{self.service}:*", count=500)]
        for i in range(0, len(keys), 500):
            await self.redis.delete(*keys[i : i + 500])

    async def close(self) -> None:
        await self.redis.aclose()
