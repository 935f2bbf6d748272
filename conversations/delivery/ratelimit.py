"""Rate limiters shared by every delivery worker, kept in Redis.

Two limits apply to every send (Cloud API doc section 7):

- **Per number**: no more sends than the number's throughput in any one
  wall-clock second at Meta. A sliding log of the last N grant times (a Redis
  list, newest first) grants a send only when the N-th most recent grant is
  at least ``window`` old, so no interval of ``window`` seconds ever holds
  more than N grants. ``window`` is a little over one second
  (WHATSAPP_RATE_LIMIT_WINDOW, 1.1 s): the delay between the grant and Meta's
  count (the network) varies, and the margin absorbs up to 100 ms of that
  jitter. A grant means "send now"; the caller waits the answered time
  otherwise.
- **Per recipient** (the pair rate limit): a GCRA with an emission interval
  of about 6 s and a burst of about 45, so a short burst to one customer goes
  at once and after that about one message every 6 s. A 131056 from Meta
  pushes that customer's schedule back (``penalize_pair``); nobody else waits.

A delivery run asks for a whole batch at once (``acquire_number_slots`` and
``acquire_pairs``): one Redis round trip per batch instead of two per send,
with the same arithmetic. Number slots a run took but could not use are given
back; removing grants that were never sent only
makes the log stricter than the truth, never looser.

The scripts read Redis' own clock, so workers on several machines agree.
If Redis cannot be reached the limiters raise, and delivery fails closed: the
message waits in the database and is tried again later.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import redis
from django.conf import settings

NUMBER_KEY = "outbound:rate:number:{}"
# The number's id is a hash tag: every pair key of a number lives in one
# cluster slot, so one script can take a whole batch's pair slots.
PAIR_KEY = "outbound:rate:pair:{{{}}}:{}"

# KEYS[1] the log; ARGV limit, window (µs). Returns 0 when granted, else the
# microseconds to wait before asking again. With a mark (KEYS[2] a hash, ARGV
# field, the value it must hold, the value a grant writes), nothing is
# granted unless the field holds that value (-1 then), and a grant writes it.
_NUMBER_SCRIPT = """
if KEYS[2] and redis.call('HGET', KEYS[2], ARGV[3]) ~= ARGV[4] then
  return -1
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local len = redis.call('LLEN', KEYS[1])
if len >= limit then
  local nth = tonumber(redis.call('LINDEX', KEYS[1], limit - 1))
  if now - nth < window then
    return nth + window - now
  end
end
redis.call('LPUSH', KEYS[1], string.format('%.0f', now))
redis.call('LTRIM', KEYS[1], 0, limit - 1)
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
if KEYS[2] then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[5])
end
return 0
"""

# KEYS[1] the log; ARGV limit, window (µs), count, and optionally a stamp and
# how many of its grants to give back first. Grants up to `count` sends at
# once, stamped with one time: after j new grants the limit-th newest grant
# is the old entry at index limit-1-j, which must be at least `window` old (or
# absent). The log is newest first, so the first refusal ends the grants.
# Returns {granted, microseconds to wait for the next one, the stamp}.
_NUMBER_SLOTS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local want = math.min(tonumber(ARGV[3]), limit)
if ARGV[4] and tonumber(ARGV[5]) > 0 then
  redis.call('LREM', KEYS[1], tonumber(ARGV[5]), ARGV[4])
end
local old = redis.call('LRANGE', KEYS[1], limit - want, limit - 1)
local granted = 0
local wait = 0
for j = 0, want - 1 do
  local stamp = old[want - j]
  if stamp and now - tonumber(stamp) < window then
    wait = tonumber(stamp) + window - now
    break
  end
  granted = j + 1
end
local stamp = string.format('%.0f', now)
for _ = 1, granted do
  redis.call('LPUSH', KEYS[1], stamp)
end
if granted > 0 then
  redis.call('LTRIM', KEYS[1], 0, limit - 1)
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
end
return {granted, wait, stamp}
"""

# KEYS[1] the theoretical arrival time (µs); ARGV interval (µs), burst,
# penalty (µs, 0 for a normal acquire). Returns 0 when granted, else the
# microseconds to wait.
_PAIR_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = (tonumber(ARGV[2]) - 1) * interval
local penalty = tonumber(ARGV[3])
local stored = redis.call('GET', KEYS[1])
local tat = now
if stored then tat = math.max(tonumber(stored), now) end
local ttl = 0
if penalty > 0 then
  tat = math.max(tat, now + tau + penalty)
  ttl = math.ceil((tat - now) / 1000) + 1000
  redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
  return 0
end
if tat - now > tau then
  return tat - tau - now
end
tat = tat + interval
ttl = math.ceil((tat - now) / 1000) + 1000
redis.call('SET', KEYS[1], string.format('%.0f', tat), 'PX', ttl)
return 0
"""

# KEYS the customers' theoretical arrival times; ARGV interval (µs), burst,
# then how many sends each key wants, in KEYS order. The GCRA of _PAIR_SCRIPT,
# applied send by send. Returns {granted, microseconds to wait} per key.
_PAIRS_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tau = (tonumber(ARGV[2]) - 1) * interval
local out = {}
for i, key in ipairs(KEYS) do
  local want = tonumber(ARGV[2 + i])
  local stored = redis.call('GET', key)
  local tat = now
  if stored then tat = math.max(tonumber(stored), now) end
  local granted = 0
  local wait = 0
  for _ = 1, want do
    if tat - now > tau then
      wait = tat - tau - now
      break
    end
    tat = tat + interval
    granted = granted + 1
  end
  if granted > 0 then
    local ttl = math.ceil((tat - now) / 1000) + 1000
    redis.call('SET', key, string.format('%.0f', tat), 'PX', ttl)
  end
  out[#out + 1] = granted
  out[#out + 1] = wait
end
return out
"""

_local = threading.local()
_scripts_lock = threading.Lock()
_clients: dict[str, redis.Redis] = {}


def connection() -> redis.Redis:
    """A Redis client for REDIS_URL (one connection pool per process and URL)."""
    url = settings.REDIS_URL
    client = _clients.get(url)
    if client is None:
        with _scripts_lock:
            client = _clients.get(url)
            if client is None:
                client = redis.Redis.from_url(
                    url,
                    socket_timeout=2,
                    socket_connect_timeout=2,
                    max_connections=1000,
                )
                _clients[url] = client
    return client


def _script(source: str):
    cache = getattr(_local, "scripts", None)
    if cache is None:
        cache = _local.scripts = {}
    key = (settings.REDIS_URL, source)
    if key not in cache:
        cache[key] = connection().register_script(source)
    return cache[key]


class MarkChanged(Exception):
    """The mark a grant was to move no longer holds the expected value."""


@dataclass(frozen=True)
class Mark:
    """A hash field a grant moves from `expected` to `value`, in the same step."""

    key: str
    field: str
    expected: str
    value: str


def script(source: str):
    """A Lua script on the limiters' Redis, registered once per thread."""
    return _script(source)


def acquire_number(
    phone_number_id: str, throughput: int, *, mark: Mark | None = None
) -> float:
    """Take one send of the number's throughput: 0.0, or seconds to wait first.

    With a mark, the grant also writes it, atomically: a send that was granted
    is a send whose mark says so. MarkChanged when the mark holds anything
    but `expected` (nothing is granted then).
    """
    window_us = int(settings.WHATSAPP_RATE_LIMIT_WINDOW * 1_000_000)
    keys = [NUMBER_KEY.format(phone_number_id)]
    args = [max(1, int(throughput)), window_us]
    if mark is not None:
        keys.append(mark.key)
        args += [mark.field, mark.expected, mark.value]
    wait_us = int(_script(_NUMBER_SCRIPT)(keys=keys, args=args))
    if wait_us < 0:
        raise MarkChanged(mark.field if mark else "")
    return wait_us / 1_000_000


def acquire_number_slots(
    phone_number_id: str,
    throughput: int,
    count: int,
    *,
    release: tuple[str, int] | None = None,
) -> tuple[int, float, str]:
    """Take up to `count` sends of the number's throughput, all to go now.

    Returns (granted, seconds until the next send may go, the grants' stamp).
    `release` = (stamp, n) first gives back n grants of an earlier call, in
    the same atomic step: a run reserves slots to size its claim, then trades
    them for fresh ones just before the requests start, so a grant still
    means "send now".
    """
    stamp_back, count_back = release or ("", 0)
    if count <= 0 and not count_back:
        return 0, 0.0, ""
    window_us = int(settings.WHATSAPP_RATE_LIMIT_WINDOW * 1_000_000)
    granted, wait_us, stamp = _script(_NUMBER_SLOTS_SCRIPT)(
        keys=[NUMBER_KEY.format(phone_number_id)],
        args=[
            max(1, int(throughput)),
            window_us,
            max(0, int(count)),
            stamp_back,
            int(count_back) if stamp_back else 0,
        ],
    )
    if isinstance(stamp, bytes):
        stamp = stamp.decode()
    return int(granted), int(wait_us) / 1_000_000, stamp


def acquire_pairs(
    phone_number_id: str, wanted: dict[str, int]
) -> dict[str, tuple[int, float]]:
    """Take pair slots for a batch: {recipient: (sends granted, seconds to wait)}.

    Each recipient's first `granted` sends may go now (in order); the rest
    wait the given time.
    """
    if not wanted:
        return {}
    recipients = list(wanted)
    answer = _script(_PAIRS_SCRIPT)(
        keys=[PAIR_KEY.format(phone_number_id, r) for r in recipients],
        args=[
            int(settings.WHATSAPP_PAIR_INTERVAL * 1_000_000),
            max(1, int(settings.WHATSAPP_PAIR_BURST)),
            *(int(wanted[r]) for r in recipients),
        ],
    )
    return {
        recipient: (int(answer[2 * i]), int(answer[2 * i + 1]) / 1_000_000)
        for i, recipient in enumerate(recipients)
    }


def acquire_pair(phone_number_id: str, recipient: str) -> float:
    """Take one send to this customer: 0.0, or seconds until one is allowed."""
    wait_us = _script(_PAIR_SCRIPT)(
        keys=[PAIR_KEY.format(phone_number_id, recipient)],
        args=[
            int(settings.WHATSAPP_PAIR_INTERVAL * 1_000_000),
            max(1, int(settings.WHATSAPP_PAIR_BURST)),
            0,
        ],
    )
    return int(wait_us) / 1_000_000


def penalize_pair(phone_number_id: str, recipient: str, seconds: float) -> None:
    """Meta said 131056: hold every send to this customer for `seconds`."""
    _script(_PAIR_SCRIPT)(
        keys=[PAIR_KEY.format(phone_number_id, recipient)],
        args=[
            int(settings.WHATSAPP_PAIR_INTERVAL * 1_000_000),
            max(1, int(settings.WHATSAPP_PAIR_BURST)),
            max(1, int(seconds * 1_000_000)),
        ],
    )


def reset(phone_number_id: str) -> None:
    """Forget a number's send log (tests, or after Meta changes its throughput)."""
    connection().delete(NUMBER_KEY.format(phone_number_id))
