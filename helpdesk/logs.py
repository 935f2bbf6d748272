"""Logging: what an operator reads at INFO is what happened, not the clock
ticking; and, with LOG_FORMAT=json, one JSON object per line carrying the
request id that follows a webhook from the endpoint to the worker.

Beat fires its sweepers every few seconds; at INFO each run was three lines
(beat sending it, the worker receiving it, the task succeeding), about 90 a
minute with nothing happening. Those lines are kept for DEBUG; a sweeper
that fails still logs its error.
"""

import contextlib
import contextvars
import datetime
import json
import logging
import re
import uuid
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


# --- Structured logs (LOG_FORMAT=json) ---------------------------------------------

# The request a line is about: nginx's X-Request-ID (or one made here) for an
# HTTP request or a webhook, kept with the stored event; a worker processing
# stored events logs theirs.
request_id: contextvars.ContextVar[str] = contextvars.ContextVar(
    "request_id", default=""
)
# What an X-Request-ID may be; anything else is replaced, never logged.
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
# LogRecord's own attributes; anything else on a record is an `extra` field.
_RECORD_FIELDS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def new_request_id(given: str | None = None) -> str:
    """`given` when it is a plausible id, else a fresh one."""
    if given and REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


@contextlib.contextmanager
def bound_request_id(value: str):
    """Log lines (and live events, conversations.realtime) inside the block
    are about request `value`."""
    token = request_id.set(value)
    try:
        yield
    finally:
        request_id.reset(token)


def request_id_of(headers) -> str:
    """The request id a stored webhook event arrived with ("" if none)."""
    value = headers.get("x-request-id") if isinstance(headers, dict) else None
    return value if isinstance(value, str) else ""


class RequestIdMiddleware:
    """Binds each Django request's id for its log lines and answers it in
    X-Request-ID."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with bound_request_id(new_request_id(request.headers.get("X-Request-ID"))):
            response = self.get_response(request)
            response["X-Request-ID"] = request_id.get()
            return response


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id,
    the exception, and any `extra` fields."""

    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.datetime.fromtimestamp(
                record.created, datetime.UTC
            ).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
        }
        if current := request_id.get():
            line["request_id"] = current
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and not key.startswith("_"):
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)
