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

Both scripts read Redis' own clock, so workers on several machines agree.
If Redis cannot be reached the limiters raise, and delivery fails closed: the
message waits in the database and is tried again later.
"""

from __future__ import annotations

import threading

import redis
from django.conf import settings

NUMBER_KEY = "outbound:rate:number:{}"
PAIR_KEY = "outbound:rate:pair:{}:{}"

# KEYS[1] the log; ARGV limit, window (µs). Returns 0 when granted, else the
# microseconds to wait before asking again.
_NUMBER_SCRIPT = """
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
return 0
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


def acquire_number(phone_number_id: str, throughput: int) -> float:
    """Take one send of the number's throughput: 0.0, or seconds to wait first."""
    window_us = int(settings.WHATSAPP_RATE_LIMIT_WINDOW * 1_000_000)
    wait_us = _script(_NUMBER_SCRIPT)(
        keys=[NUMBER_KEY.format(phone_number_id)],
        args=[max(1, int(throughput)), window_us],
    )
    return int(wait_us) / 1_000_000


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
