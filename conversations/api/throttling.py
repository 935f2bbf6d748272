"""The per-token rate limit (API_RATE_LIMIT), one Redis round trip per request.

DRF's UserRateThrottle keeps each user's request times as a pickled list in
the cache: a GET and a SET of the whole list on every request. The same
sliding log is kept here as a Redis list, trimmed, checked and appended by
one script: the same rule (at most N requests in any window of the period,
a refused request not counted), the same key (the cache's, so clearing the
cache clears it), the same clock (the throttle's timer) and the same
Retry-After.
"""

import functools

from django.conf import settings
from django.core.cache import cache
from rest_framework import throttling

from conversations.delivery import ratelimit

# KEYS[1] the log, newest first; ARGV now (seconds), the period (seconds),
# the limit. A value of another type under the key (DRF's pickled list,
# written by a process of the previous release) is replaced. Returns
# {1 when granted else 0, the requests in the log, the oldest one's time}.
_SCRIPT = """
if redis.call('TYPE', KEYS[1]).ok ~= 'list' then
  redis.call('DEL', KEYS[1])
end
local now = tonumber(ARGV[1])
local period = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
while true do
  local oldest = redis.call('LINDEX', KEYS[1], -1)
  if not oldest or tonumber(oldest) > now - period then
    break
  end
  redis.call('RPOP', KEYS[1])
end
local count = redis.call('LLEN', KEYS[1])
local granted = 0
if count < limit then
  redis.call('LPUSH', KEYS[1], ARGV[1])
  redis.call('EXPIRE', KEYS[1], math.ceil(period))
  count = count + 1
  granted = 1
end
return {granted, count, redis.call('LINDEX', KEYS[1], -1) or ARGV[1]}
"""


@functools.cache
def _script(url: str):
    return ratelimit.connection().register_script(_SCRIPT)


class UserRateThrottle(throttling.UserRateThrottle):
    def allow_request(self, request, view):
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        self.now = self.timer()
        granted, self.count, oldest = _script(settings.REDIS_URL)(
            keys=[cache.make_and_validate_key(self.key)],
            args=[repr(self.now), self.duration, self.num_requests],
        )
        self.oldest = float(oldest)
        return bool(granted)

    def wait(self):
        """DRF's: the rest of the oldest request's period, shared by the
        requests that would fit."""
        available = self.num_requests - self.count + 1
        if available <= 0:
            return None
        return (self.duration - (self.now - self.oldest)) / available
