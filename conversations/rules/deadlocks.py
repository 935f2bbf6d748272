"""A transaction PostgreSQL chose as a deadlock's victim runs again.

Two transactions that lock the same rows in different orders (an inbox's
live-event counter, then a message; or the other way round) can deadlock;
PostgreSQL rolls one back. Its work was whole or nothing, and the other has
gone on, so running it again at once is safe and almost always succeeds.
"""

import logging

from django.db import OperationalError

logger = logging.getLogger(__name__)

# PostgreSQL's SQLSTATE for a transaction it chose as a deadlock's victim.
DEADLOCK_DETECTED = "40P01"
DEADLOCK_ATTEMPTS = 3


def retrying_deadlocks(process):
    """Run `process` (one whole transaction) again, up to DEADLOCK_ATTEMPTS
    times in all, while it is a deadlock's victim; return its result."""
    attempt = 1
    while True:
        try:
            return process()
        except OperationalError as exc:
            code = getattr(exc.__cause__, "sqlstate", None)
            if code != DEADLOCK_DETECTED or attempt == DEADLOCK_ATTEMPTS:
                raise
            logger.warning("Deadlock victim; running again (%s)", attempt)
            attempt += 1
