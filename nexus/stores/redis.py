"""Stores shared by every instance through Redis.

Each instance keeps its own entries (`<prefix>:c:<scope>:<instance>`, member -> socket count)
and a heartbeat key (`<prefix>:inst:<instance>`) that expires INSTANCE_TTL_S seconds after the
instance stops refreshing it. Readers only count the entries of instances whose heartbeat is
alive, so an instance killed without a goodbye drops out of every online list by itself, within
INSTANCE_TTL_S; live instances then reap its entries and announce who went away with it.

A member of a versioned scope (presence) also has a version (`<prefix>:v:<scope>`, member -> n), a
counter raised in the same script that decides its first or last socket anywhere, when a dead
instance's entries are reaped, and by `bump` after any other change of what others see: a newer
announcement always carries a higher number, whichever instance made it.
"""
from __future__ import annotations

import json
import logging
import time
from threading import Lock
from typing import Any

from nexus.stores.base import STATS_TTL_S

log = logging.getLogger("nexus.stores")

HEARTBEAT_S = 3.0
INSTANCE_TTL_S = 10

_ELSEWHERE = """
local function elsewhere(prefix, scope, me, member, dead_too)
  for _, other in ipairs(redis.call('SMEMBERS', prefix .. ':instances')) do
    if other ~= me and (dead_too or redis.call('EXISTS', prefix .. ':inst:' .. other) == 1)
       and redis.call('HEXISTS', prefix .. ':c:' .. scope .. ':' .. other, member) == 1 then
      return true
    end
  end
  return false
end
"""

# A member's version: a counter that starts, when its key is missing (first use, or Redis lost its
# data), at the server's clock in microseconds, so that it still exceeds every version handed out
# before a loss.
_VERSION = """
local function next_version(versions, member)
  if redis.call('HEXISTS', versions, member) == 0 then
    local now = redis.call('TIME')
    redis.call('HSET', versions, member, now[1] .. string.format('%06d', tonumber(now[2])))
  end
  return redis.call('HINCRBY', versions, member, 1)
end
local function current_versions(versions, members)
  local out = {}
  for start = 1, #members, 500 do
    local chunk = {}
    for i = start, math.min(start + 499, #members) do chunk[#chunk + 1] = members[i] end
    local values = redis.call('HMGET', versions, unpack(chunk))
    for i, value in ipairs(values) do
      if value then out[#out + 1] = tonumber(value) else out[#out + 1] = next_version(versions, chunk[i]) end
    end
  end
  return out
end
"""

# ARGV: prefix, scope, instance, member, versioned ("1" or absent). Returns 0 unless this is the
# member's first socket anywhere; then 1, or the member's new version when versioned.
_ADD = _ELSEWHERE + _VERSION + """
local prefix, scope, me, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
redis.call('SADD', prefix .. ':scopes:' .. me, scope)
if redis.call('HINCRBY', prefix .. ':c:' .. scope .. ':' .. me, member, 1) > 1 then return 0 end
if elsewhere(prefix, scope, me, member) then return 0 end
if ARGV[5] == '1' then return next_version(prefix .. ':v:' .. scope, member) end
return 1
"""

# ARGV: prefix, scope, instance, member, versioned. Returns 0 unless the member's last socket
# anywhere left; then 1, or the member's new version when versioned.
_REMOVE = _ELSEWHERE + _VERSION + """
local prefix, scope, me, member = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = prefix .. ':c:' .. scope .. ':' .. me
local left = redis.call('HINCRBY', key, member, -1)
if left > 0 then return 0 end
redis.call('HDEL', key, member)
if redis.call('EXISTS', key) == 0 then redis.call('SREM', prefix .. ':scopes:' .. me, scope) end
if left < 0 then return 0 end
if elsewhere(prefix, scope, me, member) then return 0 end
if ARGV[5] == '1' then return next_version(prefix .. ':v:' .. scope, member) end
return 1
"""

# ARGV: prefix, scope, member. Returns {present on a live instance (0/1), version}.
_STATE = _VERSION + """
local prefix, scope, member = ARGV[1], ARGV[2], ARGV[3]
local present = 0
for _, inst in ipairs(redis.call('SMEMBERS', prefix .. ':instances')) do
  if redis.call('EXISTS', prefix .. ':inst:' .. inst) == 1
     and redis.call('HEXISTS', prefix .. ':c:' .. scope .. ':' .. inst, member) == 1 then
    present = 1
    break
  end
end
return {present, current_versions(prefix .. ':v:' .. scope, {member})[1]}
"""

# ARGV: prefix, scope. The members on every live instance, each followed by its version.
_VERSIONED_MEMBERS = _VERSION + """
local prefix, scope = ARGV[1], ARGV[2]
local seen, members, out = {}, {}, {}
for _, inst in ipairs(redis.call('SMEMBERS', prefix .. ':instances')) do
  if redis.call('EXISTS', prefix .. ':inst:' .. inst) == 1 then
    for _, member in ipairs(redis.call('HKEYS', prefix .. ':c:' .. scope .. ':' .. inst)) do
      if not seen[member] then seen[member] = true; members[#members + 1] = member end
    end
  end
end
for i, version in ipairs(current_versions(prefix .. ':v:' .. scope, members)) do
  out[#out + 1] = members[i]
  out[#out + 1] = version
end
return out
"""

# ARGV: prefix, scope, member, ... For each member: present on a live instance (0/1), then a new version.
_RESTATE = _VERSION + """
local prefix, scope = ARGV[1], ARGV[2]
local live = {}
for _, inst in ipairs(redis.call('SMEMBERS', prefix .. ':instances')) do
  if redis.call('EXISTS', prefix .. ':inst:' .. inst) == 1 then live[#live + 1] = prefix .. ':c:' .. scope .. ':' .. inst end
end
local out = {}
for i = 3, #ARGV do
  local present = 0
  for _, key in ipairs(live) do
    if redis.call('HEXISTS', key, ARGV[i]) == 1 then present = 1; break end
  end
  out[#out + 1] = present
  out[#out + 1] = next_version(prefix .. ':v:' .. scope, ARGV[i])
end
return out
"""

# ARGV: prefix, scope, member, ... The current version of each member.
_VERSIONS = _VERSION + """
local members = {}
for i = 3, #ARGV do members[#members + 1] = ARGV[i] end
return current_versions(ARGV[1] .. ':v:' .. ARGV[2], members)
"""

# ARGV: versions key, member. The member's next version.
_BUMP = _VERSION + "return next_version(ARGV[1], ARGV[2])"

# ARGV: prefix, scope, member, ... Raises the version of each member that already has one (one
# without is given a fresh one when it is next read).
_BUMP_KNOWN = """
local prefix, scope = ARGV[1], ARGV[2]
for i = 3, #ARGV do
  local versions = prefix .. ':v:' .. scope
  if redis.call('HEXISTS', versions, ARGV[i]) == 1 then redis.call('HINCRBY', versions, ARGV[i], 1) end
end
return 0
"""

# ARGV: prefix, scope. The members on every live instance.
_MEMBERS = """
local prefix, scope = ARGV[1], ARGV[2]
local seen, out = {}, {}
for _, inst in ipairs(redis.call('SMEMBERS', prefix .. ':instances')) do
  if redis.call('EXISTS', prefix .. ':inst:' .. inst) == 1 then
    for _, member in ipairs(redis.call('HKEYS', prefix .. ':c:' .. scope .. ':' .. inst)) do
      if not seen[member] then seen[member] = true; out[#out + 1] = member end
    end
  end
end
return out
"""

# ARGV: prefix, instance. Deletes the instance's entries; returns scope, member, scope, member, ...
# for the members that no other instance holds. A member also held by another dead instance that
# is not reaped yet is reported when that one is, so each departure is reported once. Atomic, so
# two reapers never both report.
_REAP = _ELSEWHERE + """
local prefix, dead = ARGV[1], ARGV[2]
local out = {}
for _, scope in ipairs(redis.call('SMEMBERS', prefix .. ':scopes:' .. dead)) do
  local key = prefix .. ':c:' .. scope .. ':' .. dead
  local members = redis.call('HKEYS', key)
  redis.call('DEL', key)
  for _, member in ipairs(members) do
    if not elsewhere(prefix, scope, dead, member, true) then
      out[#out + 1] = scope; out[#out + 1] = member
      -- gone everywhere: a versioned member's presence changed
      local versions = prefix .. ':v:' .. scope
      if redis.call('HEXISTS', versions, member) == 1 then redis.call('HINCRBY', versions, member, 1) end
    end
  end
end
redis.call('DEL', prefix .. ':scopes:' .. dead)
redis.call('SREM', prefix .. ':instances', dead)
return out
"""


#: Connections one instance keeps to Redis. Beyond it a caller waits for a free one (up to
#: POOL_WAIT_S) instead of failing: hundreds of sockets closing at once must all be counted out.
POOL_SIZE = 50
POOL_WAIT_S = 5


def connect(url: str, pool_size: int = POOL_SIZE) -> Any:
    """A redis-py client with short timeouts (a dead Redis must not hang a handler for long) and a
    bounded pool that makes callers wait their turn. A `redis+sentinel://` URL follows the
    primary that its Sentinels name (nexus.stores.sentinel)."""
    import redis

    if url.startswith("redis+sentinel://"):
        from nexus.stores import sentinel

        return sentinel.connect(url, pool_size=pool_size, pool_wait_s=POOL_WAIT_S, socket_connect_timeout=3,
                                socket_timeout=5, health_check_interval=30)
    pool = redis.BlockingConnectionPool.from_url(
        url,
        max_connections=pool_size,
        timeout=POOL_WAIT_S,
        socket_connect_timeout=3,
        socket_timeout=5,
        health_check_interval=30,
        decode_responses=True,
    )
    return redis.Redis(connection_pool=pool)


class RedisTally:
    """Tally shared by every instance; see the module docstring for the layout."""

    def __init__(self, client: Any, prefix: str, instance_id: str):
        self.client = client
        self.prefix = prefix
        self.instance_id = instance_id
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._members = client.register_script(_MEMBERS)
        self._reap = client.register_script(_REAP)
        self._state = client.register_script(_STATE)
        self._versioned_members = client.register_script(_VERSIONED_MEMBERS)
        self._bump_known = client.register_script(_BUMP_KNOWN)
        self._bump = client.register_script(_BUMP)
        self._versions = client.register_script(_VERSIONS)
        self._restate = client.register_script(_RESTATE)
        self._lock = Lock()
        # What this instance holds, to restore it if the others ever reaped it (a long stall).
        self._local: dict[str, dict[str, int]] = {}
        self._registered = False

    def add(self, scope: str, member: str) -> bool:
        self._hold(scope, member)
        return bool(self._add(args=[self.prefix, scope, self.instance_id, member]))

    def remove(self, scope: str, member: str) -> bool:
        if not self._release(scope, member):
            return False
        return bool(self._remove(args=[self.prefix, scope, self.instance_id, member]))

    def enter(self, scope: str, member: str) -> int:
        self._hold(scope, member)
        return int(self._add(args=[self.prefix, scope, self.instance_id, member, "1"]))

    def leave(self, scope: str, member: str) -> int:
        if not self._release(scope, member):
            return 0
        return int(self._remove(args=[self.prefix, scope, self.instance_id, member, "1"]))

    def bump(self, scope: str, member: str) -> int:
        return int(self._bump(args=[self._versions_key(scope), member]))

    def version(self, scope: str, member: str) -> int:
        return int(self.client.hget(self._versions_key(scope), member) or 0)

    def versions(self, scope: str, members: list[str]) -> list[int]:
        if not members:
            return []
        return [int(version) for version in self._versions(args=[self.prefix, scope, *members])]

    def state(self, scope: str, member: str) -> tuple[bool, int]:
        present, version = self._state(args=[self.prefix, scope, member])
        return bool(present), int(version)

    def versioned_members(self, scope: str) -> dict[str, int]:
        flat = self._versioned_members(args=[self.prefix, scope])
        return {member: int(version) for member, version in zip(flat[0::2], flat[1::2])}

    def restate(self, scope: str, members: list[str]) -> list[tuple[bool, int]]:
        if not members:
            return []
        flat = self._restate(args=[self.prefix, scope, *members])
        return [(bool(present), int(version)) for present, version in zip(flat[0::2], flat[1::2])]

    def members(self, scope: str) -> set[str]:
        return set(self._members(args=[self.prefix, scope]))

    def _versions_key(self, scope: str) -> str:
        return f"{self.prefix}:v:{scope}"

    def _hold(self, scope: str, member: str) -> None:
        with self._lock:
            members = self._local.setdefault(scope, {})
            members[member] = members.get(member, 0) + 1

    def _release(self, scope: str, member: str) -> bool:
        with self._lock:
            members = self._local.get(scope)
            if not members or member not in members:
                return False
            members[member] -= 1
            if members[member] <= 0:
                del members[member]
                if not members:
                    del self._local[scope]
        return True

    def heartbeat(self) -> list[tuple[str, str]]:
        key = f"{self.prefix}:inst:{self.instance_id}"
        previous = self.client.set(key, str(time.time()), ex=INSTANCE_TTL_S, get=True)
        if not self._registered:
            self.client.sadd(f"{self.prefix}:instances", self.instance_id)
            self._registered = True
        elif previous is None:
            return self._restore()
        return []

    def reap(self) -> list[tuple[str, str]]:
        """Reap instances whose heartbeat expired, and this instance's own earlier life."""
        gone: list[tuple[str, str]] = []
        if not self._registered:
            gone += self._reap_instance(self.instance_id)  # a restart with the same id: no ghosts
        instances = sorted(self.client.smembers(f"{self.prefix}:instances") - {self.instance_id})
        if instances:
            alive = self.client.exists  # one round trip per instance; instances are few
            for instance in instances:
                if not alive(f"{self.prefix}:inst:{instance}"):
                    reaped = self._reap_instance(instance)
                    if reaped:
                        log.info("reaped instance %s: %d entries gone", instance, len(reaped))
                    gone += reaped
        return gone

    def close(self) -> None:
        """Withdraw this instance: its entries and its heartbeat."""
        with self._lock:
            self._local.clear()
        self.client.delete(f"{self.prefix}:inst:{self.instance_id}")
        self._reap_instance(self.instance_id)

    def _reap_instance(self, instance: str) -> list[tuple[str, str]]:
        flat = self._reap(args=[self.prefix, instance])
        return list(zip(flat[0::2], flat[1::2]))

    def _restore(self) -> list[tuple[str, str]]:
        """Put this instance's entries back; the pairs that were absent everywhere until now."""
        with self._lock:
            snapshot = {scope: dict(members) for scope, members in self._local.items()}
        absent = [(scope, member) for scope, members in snapshot.items()
                  for member in members if member not in self.members(scope)]
        log.warning("this instance's heartbeat had expired; restoring %d scopes", len(snapshot))
        pipe = self.client.pipeline(transaction=False)
        pipe.sadd(f"{self.prefix}:instances", self.instance_id)
        for scope, members in snapshot.items():
            pipe.delete(f"{self.prefix}:c:{scope}:{self.instance_id}")
            pipe.hset(f"{self.prefix}:c:{scope}:{self.instance_id}", mapping=members)
            pipe.sadd(f"{self.prefix}:scopes:{self.instance_id}", scope)
        pipe.execute()
        for scope in {scope for scope, _ in absent}:  # present again: a new version for those who have one
            self._bump_known(args=[self.prefix, scope, *[member for s, member in absent if s == scope]])
        return absent


class RedisPresenceStore:
    """Chosen statuses, activity and away flags, shared by every instance."""

    def __init__(self, client: Any, prefix: str):
        self.client = client
        self.prefix = prefix
        self._activity = f"{prefix}:activity"
        self._away = f"{prefix}:away"

    def _status_key(self, user_id: int) -> str:
        return f"{self.prefix}:status:{user_id}"

    def chosen_status(self, user_id: int) -> str | None:
        return self.client.get(self._status_key(user_id))

    def choose_status(self, user_id: int, status: str) -> None:
        self.client.set(self._status_key(user_id), status)

    def remember_status(self, user_id: int, seconds: int) -> None:
        self.client.expire(self._status_key(user_id), seconds)

    def touch(self, user_id: int, at: float) -> None:
        self.client.zadd(self._activity, {str(user_id): at})

    def last_activity(self, user_id: int) -> float | None:
        return self.client.zscore(self._activity, str(user_id))

    def idle_since(self, cutoff: float, limit: int) -> list[int]:
        return [int(uid) for uid in self.client.zrangebyscore(self._activity, "-inf", f"({cutoff}", 0, limit)]

    def forget_activity(self, user_id: int) -> None:
        pipe = self.client.pipeline(transaction=False)
        pipe.zrem(self._activity, str(user_id))
        pipe.srem(self._away, str(user_id))
        pipe.execute()

    def set_away(self, user_id: int) -> bool:
        # Away users leave the activity index, so the next sweep does not see them again.
        pipe = self.client.pipeline(transaction=True)
        pipe.sadd(self._away, str(user_id))
        pipe.zrem(self._activity, str(user_id))
        return bool(pipe.execute()[0])

    def clear_away(self, user_id: int) -> bool:
        return bool(self.client.srem(self._away, str(user_id)))

    def is_away(self, user_id: int) -> bool:
        return bool(self.client.sismember(self._away, str(user_id)))

    def statuses(self, user_ids: list[int]) -> dict[int, tuple[str | None, bool]]:
        if not user_ids:
            return {}
        pipe = self.client.pipeline(transaction=False)
        pipe.mget([self._status_key(user_id) for user_id in user_ids])
        pipe.smismember(self._away, [str(user_id) for user_id in user_ids])
        chosen, away = pipe.execute()
        return {user_id: (status, bool(flag)) for user_id, status, flag in zip(user_ids, chosen, away)}


class RedisStatsBoard:
    """Stats of every instance in one hash, each entry stamped; stale ones are skipped and pruned."""

    def __init__(self, client: Any, prefix: str):
        self.client = client
        self.key = f"{prefix}:stats"

    def publish(self, instance_id: str, stats: dict) -> None:
        self.client.hset(self.key, instance_id, json.dumps({"at": time.time(), "stats": stats}))

    def all(self) -> list[dict]:
        cutoff = time.time() - STATS_TTL_S
        fresh: list[dict] = []
        stale: list[str] = []
        for instance_id, raw in self.client.hgetall(self.key).items():
            try:
                entry = json.loads(raw)
            except ValueError:
                entry = {}
            if entry.get("at", 0) >= cutoff and isinstance(entry.get("stats"), dict):
                fresh.append(entry["stats"])
            else:
                stale.append(instance_id)
        if stale:
            self.client.hdel(self.key, *stale)
        return fresh
