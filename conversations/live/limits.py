"""Per-socket rate limits: how often one tab may ask for expensive work.

A token bucket: `capacity` requests at once, then one more every
`interval` seconds. Each socket has its own buckets (consumers.py), so
nothing is shared between processes and nothing is stored.
"""

from time import monotonic


class TokenBucket:
    def __init__(self, *, capacity: int, interval: float):
        self.capacity = capacity
        self.interval = interval
        self.tokens = float(capacity)
        self.updated = monotonic()

    def _refill(self) -> None:
        now = monotonic()
        if self.interval > 0:
            earned = (now - self.updated) / self.interval
            self.tokens = min(float(self.capacity), self.tokens + earned)
        else:
            self.tokens = float(self.capacity)
        self.updated = now

    def take(self) -> bool:
        """Spend one token if there is one; whether there was."""
        self._refill()
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False

    def wait(self) -> float:
        """Seconds until the next token."""
        self._refill()
        return max(0.0, (1 - self.tokens) * self.interval)
