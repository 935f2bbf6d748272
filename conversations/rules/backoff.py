"""How long a retry waits: one exponential formula, each caller its policy.

Every retry in the helpdesk (webhook events, Celery's transient retries,
sends, a customer's pair-rate wait, callbacks to the business) waits
``base × factor^(attempts-1)`` seconds, capped, optionally spread by jitter
so that a burst that failed together does not retry together.
"""

from __future__ import annotations

import random


def delay(
    attempts: int,
    *,
    base: float,
    cap: float,
    factor: float = 2,
    jitter: tuple[float, float] = (1.0, 1.0),
) -> float:
    """Seconds to wait after the given number of attempts (the first is 1).

    ``jitter`` multiplies the capped delay by a random factor between its
    two bounds ((1, 1): none).
    """
    ceiling = min(cap, base * factor ** max(0, attempts - 1))
    low, high = jitter
    if low == high:
        return ceiling * low
    return ceiling * random.uniform(low, high)  # noqa: S311
