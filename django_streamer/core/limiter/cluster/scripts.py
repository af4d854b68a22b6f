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
drop a dead worker's leases in one call (``owner:...:gone``: tombstones, see
RENEW), and each pool keeps an index of its keys (``pool:<digest>``, bases scored
by when last seen held, capped) so the metrics can count a keyed pool's slots in
a few calls. Every key expires some time after its last write, so keys of
per-client pools do not pile up.

An ``epoch`` key (no expiry) names the Redis the leases are registered in. A
Redis that restarted empty has none: the first call to find it missing makes a
new one and, if the caller had seen an earlier one (``known``), opens a
recovery window of one lease (``epoch:recovering``) in which nothing new is
admitted while every live process adds its leases back (RENEW, with the epoch
each lease was admitted under). See ``docs/cluster-recovery.md``.

Times come from Redis's ``TIME``: hosts' clocks never enter a comparison.
"""

from __future__ import annotations

_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

# The epoch of this Redis (KEYS epoch, recovering; ``known``: an epoch the caller
# saw before, or ''; ``lease`` ms). Missing: Redis lost our keys (restarted
# empty), or is new. A caller that knew an earlier epoch proves it was a restart:
# leases may be held that this Redis does not count, so nothing new is admitted
# for one lease, the time every live holder has to add its leases back.
_EPOCH = """
local function epoch(key, recovering, known, lease)
  local current = redis.call('GET', key)
  if current then
    return current
  end
  current = tostring(now)
  redis.call('SET', key, current)
  if known ~= '' then
    redis.call('SET', recovering, '1', 'PX', lease)
  end
  return current
end
"""

# Releases a process deferred (see ``ClusterBackend.release``), sent with its
# next ACQUIRE or in one RELEASE: ARGV pairs of base, lease id from ``first`` on.
# A key with waiters gets a wake-up on the channel. A release of a lease not in
# the owner set (one admitted before a restart, not yet added back) leaves a
# tombstone (``owner:gone``) so that RENEW does not add it back afterwards. So
# does one of an admission that failed on the caller's side (Releaser.keep):
# Redis may have queued it, so its place in the queue goes too.
_RELEASES = """
local function release(owner, channel, keep, first)
  local n = 0
  for i = first, #ARGV, 2 do
    local base, id = ARGV[i], ARGV[i + 1]
    n = n + redis.call('ZREM', base .. ':h', id)
    if redis.call('SREM', owner, base .. '|' .. id) == 0 then
      redis.call('ZREM', base .. ':q', id)
      redis.call('ZREM', base .. ':e', id)
      redis.call('SADD', owner .. ':gone', base .. '|' .. id)
      redis.call('PEXPIRE', owner .. ':gone', keep)
    end
    if redis.call('ZCARD', base .. ':q') > 0 then
      redis.call('PUBLISH', channel, string.match(base, '{(.*)}'))
    end
  end
  return n
end
"""

# The pool's index of its keys (for IN_USE_POOL), scored by when each was last
# seen held: at most ``cap`` entries, the oldest dropped (at most 100 a call, so
# an index past its cap shrinks in steps). Each admission looks at the two
# oldest: one nothing holds is dropped, one still held is marked seen now.
_INDEX = """
local function index(key, base, cap)
  redis.call('ZADD', key, now, base)
  redis.call('PEXPIRE', key, 86400000)
  for _, old in ipairs(redis.call('ZRANGE', key, 0, 1)) do
    if redis.call('ZCOUNT', old .. ':h', '(' .. now, '+inf') == 0 then
      redis.call('ZREM', key, old)
    else
      redis.call('ZADD', key, now, old)
    end
  end
  local over = redis.call('ZCARD', key) - cap
  if over > 0 then
    redis.call('ZREMRANGEBYRANK', key, 0, math.min(over, 100) - 1)
  end
end
"""

# KEYS: owner, pool index, epoch, recovering. ARGV: base, lease id, limit, lease
# ms, wait (0/1), keep ms, channel, known epoch (or ''), index cap, then the
# deferred releases. Returns {admitted 0/1, held after, waiters left in the
# queue, epoch}: the third lets the caller hand a lease on locally only while
# nobody waits (see releases.py); the fourth tells a caller holding leases of
# another epoch that Redis lost them (restarted empty): its heartbeat adds them
# back at once. The pool key's Redis keys are base:h, base:q, base:e and base:n
# (one hash tag).
ACQUIRE = (
    _NOW
    + _EPOCH
    + _RELEASES
    + _INDEX
    + """
local owner, base, id = KEYS[1], ARGV[1], ARGV[2]
local limit, lease, wait, keep = tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5], ARGV[6]
local h, q, e, n = base .. ':h', base .. ':q', base .. ':e', base .. ':n'
local current = epoch(KEYS[3], KEYS[4], ARGV[8], lease)
release(owner, ARGV[7], ARGV[6], 10)
redis.call('ZREMRANGEBYSCORE', h, '-inf', now)
local waiting = redis.call('ZCARD', q)
if redis.call('ZSCORE', h, id) then
  -- This id holds already: a retried call (calls.py retries once on a connection
  -- that was closed while idle) whose first attempt ran. Admitted, not refused.
  return {1, redis.call('ZCARD', h), waiting, current}
end
-- After an empty restart, leases held elsewhere are not counted yet: full.
local recovering = redis.call('EXISTS', KEYS[4]) == 1
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
if recovering or held + ahead >= limit then
  if wait == '1' then
    redis.call('ZADD', e, now + math.max(lease, 3000), id)
    redis.call('PEXPIRE', e, keep)
    return {0, held, redis.call('ZCARD', q), current}
  end
  return {0, held, ahead, current}
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
index(KEYS[2], base, tonumber(ARGV[9]))
return {1, held + 1, queued, current}
"""
)

# Deferred releases with no ACQUIRE to ride on. KEYS: owner. ARGV: channel, keep
# ms, then pairs of base, lease id. Returns the leases released.
RELEASE = (
    _RELEASES
    + """
return release(KEYS[1], ARGV[1], ARGV[2], 3)
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

# The heartbeat: every lease of this process in one call. A lease admitted under
# another epoch than this Redis's was lost with an earlier Redis (restarted
# empty): it is added back, unless released since (a tombstone). The caller
# only sends leases renewed less than a lease time ago, so none of them can
# have expired and been handed on; and a RENEW that finds the epoch missing
# opens the recovery window (its caller holds leases: it was a restart).
# Otherwise only leases still in the owner set are renewed: one released since
# the caller listed it stays released; and only leases still held: one that
# expired before this call ran (a late call: a slow network, a paused Redis)
# may have gone to someone else, so it is dropped and returned, and the caller
# counts it lost. (One expired but still listed was counted by nobody, since
# every admission drops expired leases first: it is renewed.)
# KEYS: owner, epoch, recovering. ARGV: lease ms, keep ms, then triples of base,
# lease id, the epoch it was admitted or last renewed under.
# Returns {this Redis's epoch, the ids of the leases that were gone}.
RENEW = (
    _NOW
    + _EPOCH
    + """
local owner, lease, keep = KEYS[1], tonumber(ARGV[1]), ARGV[2]
local current = epoch(KEYS[2], KEYS[3], 'held', lease)
local function renew(h, id, member)
  redis.call('ZADD', h, now + lease, id)
  redis.call('PEXPIRE', h, keep)
  redis.call('SADD', owner, member)
end
local gone = {}
for i = 3, #ARGV, 3 do
  local id, h, member = ARGV[i + 1], ARGV[i] .. ':h', ARGV[i] .. '|' .. ARGV[i + 1]
  if ARGV[i + 2] ~= current then
    -- Lost with an earlier Redis: back, unless released since the restart.
    if redis.call('SISMEMBER', owner .. ':gone', member) == 0 then
      renew(h, id, member)
    end
  elseif redis.call('SISMEMBER', owner, member) == 1 then
    if redis.call('ZSCORE', h, id) then
      renew(h, id, member)
    else
      redis.call('SREM', owner, member)
      gone[#gone + 1] = id
    end
  end
end
redis.call('SADD', owner, '*')
redis.call('PEXPIRE', owner, keep)
return {current, gone}
"""
)

# A dead process's leases (gunicorn's child_exit). KEYS: owner, epoch. ARGV:
# channel. Returns {leases released, the epoch}: the arbiter learns it, so that a
# worker it forks later knows a Redis without one restarted empty.
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
redis.call('DEL', KEYS[1], KEYS[1] .. ':gone')
return {released, redis.call('GET', KEYS[2]) or ''}
"""

# KEYS: h. Live leases of one pool key, expired ones dropped first.
IN_USE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
return redis.call('ZCARD', KEYS[1])
"""
)

# Slots held now over one page of a pool's keys, in all and by its busiest key
# (the metrics' scrape sends one call per page, so Redis serves others between
# them). KEYS: pool index. ARGV: first and last rank, newest first. Reads only:
# admissions prune the index. Returns {total, busiest}.
IN_USE_POOL = (
    _NOW
    + """
local total, busiest = 0, 0
for _, base in ipairs(redis.call('ZREVRANGE', KEYS[1], ARGV[1], ARGV[2])) do
  local held = redis.call('ZCOUNT', base .. ':h', '(' .. now, '+inf')
  total = total + held
  busiest = math.max(busiest, held)
end
return {total, busiest}
"""
)
