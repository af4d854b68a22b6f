"""The Lua run by Redis for cluster-scope pools. Plain text, no imports.

Each pool key has four Redis keys sharing one ``{hash tag}`` (``base``):

* ``base:h``: sorted set of held leases, scored by expiry (ms, Redis clock);
* ``base:q``: sorted set of waiters, scored by their ticket;
* ``base:e``: sorted set of the same waiters, scored by expiry (a waiter that
  vanished without giving up its place is dropped after it);
* ``base:n``: the ticket counter.

This is the fair-semaphore pattern: a waiter is admitted when the held leases
plus the waiters ahead of it are fewer than the limit, so order across hosts is
first come, first served; a request that does not wait counts every waiter as
ahead of it. A process's leases are also listed in an owner set
(``owner:<host>:<pid>``, members ``base|lease`` and a marker) so the gunicorn arbiter can
drop a dead worker's leases in one call, and each pool keeps an index of its keys
(``pool:<digest>``, bases scored by their last admission) so the metrics can count a
keyed pool's slots in one call. Every key expires some time after its
last write, so keys of per-client pools do not pile up.

Times come from Redis's ``TIME``: hosts' clocks never enter a comparison.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# Releases a process deferred (see ``ClusterBackend.release``), sent with its
# next ACQUIRE or in one RELEASE: ARGV pairs of base, lease id from ``first`` on.
# A key with waiters gets a wake-up on the channel.
_RELEASES = """
local function release(owner, channel, first)
  local n = 0
  for i = first, #ARGV, 2 do
    local base, id = ARGV[i], ARGV[i + 1]
    n = n + redis.call('ZREM', base .. ':h', id)
    redis.call('SREM', owner, base .. '|' .. id)
    if redis.call('ZCARD', base .. ':q') > 0 then
      redis.call('PUBLISH', channel, string.match(base, '{(.*)}'))
    end
  end
  return n
end
"""

# KEYS: owner, pool index. ARGV: base, lease id, limit, lease ms, wait (0/1),
# keep ms, channel, then the deferred releases. Returns {admitted 0/1, held after,
# waiters left in the queue, owner set missing 0/1}: the third lets the caller hand
# a lease on locally only while nobody waits (see releases.py); the fourth tells a
# caller that holds leases that Redis lost them (restarted empty), since this
# admission recreates the owner set that RENEW would otherwise have found missing.
# The pool key's Redis keys are base:h, base:q, base:e and base:n (one hash tag).
ACQUIRE = (
    _NOW
    + _RELEASES
    + """
local owner, base, id = KEYS[1], ARGV[1], ARGV[2]
local limit, lease, wait, keep = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local h, q, e, n = base .. ':h', base .. ':q', base .. ':e', base .. ':n'
local missing = 1 - redis.call('EXISTS', owner)
release(owner, ARGV[7], 8)
redis.call('ZREMRANGEBYSCORE', h, '-inf', now)
local waiting = redis.call('ZCARD', q)
if redis.call('ZSCORE', h, id) then
  -- This id holds already: a retried call (calls.py retries once on a connection
  -- that was closed while idle) whose first attempt ran. Admitted, not refused.
  return {1, redis.call('ZCARD', h), waiting, missing}
end
if waiting > 0 then
  local gone = redis.call('ZRANGEBYSCORE', e, '-inf', now)
  for _, w in ipairs(gone) do
    redis.call('ZREM', q, w)
    redis.call('ZREM', e, w)
  end
end
local held = redis.call('ZCARD', h)
local ahead
if wait == '1' then
  if not redis.call('ZSCORE', q, id) then
    redis.call('ZADD', q, redis.call('INCR', n), id)
  end
  -- Every retry keeps the queue alive, however long the wait.
  redis.call('PEXPIRE', n, keep)
  redis.call('PEXPIRE', q, keep)
  ahead = redis.call('ZRANK', q, id)
elseif waiting > 0 then
  ahead = redis.call('ZCARD', q)
else
  ahead = 0
end
if held + ahead >= limit then
  if wait == '1' then
    redis.call('ZADD', e, now + math.max(lease, 3000), id)
    redis.call('PEXPIRE', e, keep)
    return {0, held, redis.call('ZCARD', q), missing}
  end
  return {0, held, ahead, missing}
end
local queued = ahead  -- without a ticket, ahead is every waiter
if wait == '1' then
  redis.call('ZREM', q, id)
  redis.call('ZREM', e, id)
  queued = redis.call('ZCARD', q)
  -- Another waiter may fit too (several slots freed at once).
  if held + 1 < limit and queued > 0 then
    redis.call('PUBLISH', ARGV[7], string.match(base, '{(.*)}'))
  end
end
redis.call('ZADD', h, now + lease, id)
redis.call('PEXPIRE', h, keep)
redis.call('SADD', owner, base .. '|' .. id, '*')
redis.call('PEXPIRE', owner, keep)
-- The pool's index of its keys, for IN_USE_POOL. It outlives any lease (a day
-- after the last admission); IN_USE_POOL drops the keys nothing holds.
redis.call('ZADD', KEYS[2], now, base)
redis.call('PEXPIRE', KEYS[2], 86400000)
return {1, held + 1, queued, missing}
"""
)

# Deferred releases with no ACQUIRE to ride on. KEYS: owner. ARGV: channel, then
# pairs of base, lease id. Returns the leases released.
RELEASE = (
    _RELEASES
    + """
return release(KEYS[1], ARGV[1], 2)
"""
)

# A waiter that timed out or was cancelled. KEYS: q, e. ARGV: id, channel, digest.
GIVE_UP = """
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('ZCARD', KEYS[1]) > 0 then
  redis.call('PUBLISH', ARGV[2], ARGV[3])
end
return 0
"""

# The heartbeat: every lease of this process in one call. The owner set holds a
# marker ("*") besides the leases, so it exists as long as Redis has this
# process's data. If it is gone, Redis lost it (restarted empty): every lease
# is added back. So it is when the caller says so (``all`` 1): an ACQUIRE since
# the restart found the set missing and recreated it. The caller only sends
# leases renewed less than a lease time ago, so none of them can have expired
# and been handed on. Otherwise only leases still in the set are renewed: one
# released since the caller listed it stays released; and only leases still
# held: one that expired before this call ran (a late call: a slow network, a
# paused Redis) may have gone to someone else, so it is dropped and returned,
# and the caller counts it lost. (One expired but still listed was counted by
# nobody, since every admission drops expired leases first: it is renewed.)
# KEYS: owner. ARGV: lease ms, keep ms, all (0/1), then pairs of base, lease id.
# Returns the ids of the leases that were gone.
RENEW = (
    _NOW
    + """
local owner, expiry, keep = KEYS[1], now + tonumber(ARGV[1]), ARGV[2]
local lost = ARGV[3] == '1' or redis.call('EXISTS', owner) == 0
local gone = {}
for i = 4, #ARGV, 2 do
  local member, h = ARGV[i] .. '|' .. ARGV[i + 1], ARGV[i] .. ':h'
  if lost or redis.call('SISMEMBER', owner, member) == 1 then
    if lost or redis.call('ZSCORE', h, ARGV[i + 1]) then
      redis.call('ZADD', h, expiry, ARGV[i + 1])
      redis.call('PEXPIRE', h, keep)
      redis.call('SADD', owner, member)
    else
      redis.call('SREM', owner, member)
      gone[#gone + 1] = ARGV[i + 1]
    end
  end
end
redis.call('SADD', owner, '*')
redis.call('PEXPIRE', owner, keep)
return gone
"""
)

# A dead process's leases (gunicorn's child_exit). KEYS: owner. ARGV: channel.
RELEASE_OWNER = """
local members = redis.call('SMEMBERS', KEYS[1])
local released = 0
for _, m in ipairs(members) do
  local cut = string.find(m, '|', 1, true)
  if cut then  -- not the marker
    local base, id = string.sub(m, 1, cut - 1), string.sub(m, cut + 1)
    released = released + redis.call('ZREM', base .. ':h', id)
    if redis.call('ZCARD', base .. ':q') > 0 then
      redis.call('PUBLISH', ARGV[1], string.match(base, '{(.*)}'))
    end
  end
end
redis.call('DEL', KEYS[1])
return released
"""

# KEYS: h. Live leases of one pool key, expired ones dropped first.
IN_USE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)

# Slots held now over every key of a pool, and by its busiest key (the metrics'
# scrape). KEYS: pool index. Returns {total, busiest}.
IN_USE_POOL = (
    _NOW
    + """
local total, busiest = 0, 0
for _, base in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local h = base .. ':h'
  redis.call('ZREMRANGEBYSCORE', h, '-inf', now)
  local held = redis.call('ZCARD', h)
  if held == 0 then
    redis.call('ZREM', KEYS[1], base)
  end
  total = total + held
  busiest = math.max(busiest, held)
end
return {total, busiest}
"""
)
