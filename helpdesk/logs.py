"""Logging filters: what an operator reads at INFO is what happened, not the
clock ticking.

Beat fires its sweepers every few seconds; at INFO each run was three lines
(beat sending it, the worker receiving it, the task succeeding), about 90 a
minute with nothing happening. Those lines are kept for DEBUG; a sweeper
that fails still logs its error.
"""

import logging
from functools import cached_property

from django.conf import settings

# The Celery loggers that write a line per task sent, received and finished.
TASK_LIFECYCLE_LOGGERS = frozenset(
    {"celery.beat", "celery.worker.strategy", "celery.app.trace"}
)


class RoutineTasks(logging.Filter):
    """Drop the lifecycle lines of beat's scheduled tasks below DEBUG."""

    @cached_property
    def routine(self) -> frozenset[str]:
        return frozenset(
            entry["task"] for entry in settings.CELERY_BEAT_SCHEDULE.values()
        )

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name not in TASK_LIFECYCLE_LOGGERS or record.levelno > logging.INFO:
            return True
        if logging.getLogger(record.name).isEnabledFor(logging.DEBUG):
            return True
        message = record.getMessage()
        return not any(task in message for task in self.routine)
