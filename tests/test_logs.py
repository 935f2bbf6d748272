"""Routine sweeps stay out of the INFO log; everything else stays in."""

import logging

import pytest

from helpdesk.logs import RoutineTasks


def record(logger: str, message: str, level: int = logging.INFO):
    return logging.LogRecord(logger, level, __file__, 1, message, None, None)


@pytest.fixture
def celery_loggers_at_info():
    names = ["celery.beat", "celery.worker.strategy", "celery.app.trace"]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.INFO)
    yield
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def test_beats_sweepers_are_quiet_at_info(celery_loggers_at_info):
    routine = RoutineTasks()
    sweep = "conversations.tasks.sweep_deliveries"

    assert not routine.filter(
        record("celery.beat", f"Scheduler: Sending due task sweep-deliveries ({sweep})")
    )
    assert not routine.filter(
        record("celery.worker.strategy", f"Task {sweep}[1f] received")
    )
    assert not routine.filter(
        record("celery.app.trace", f"Task {sweep}[1f] succeeded in 0.004s: None")
    )


def test_other_tasks_failures_and_debug_still_log(celery_loggers_at_info):
    routine = RoutineTasks()
    sweep = "conversations.tasks.sweep_deliveries"

    assert routine.filter(
        record("celery.app.trace", "Task conversations.tasks.deliver_messages[2] ok")
    )
    assert routine.filter(
        record("celery.app.trace", f"Task {sweep}[1f] raised", logging.ERROR)
    )
    assert routine.filter(record("conversations.tasks", f"{sweep} moved 3 rows"))
    logging.getLogger("celery.app.trace").setLevel(logging.DEBUG)
    assert routine.filter(record("celery.app.trace", f"Task {sweep}[1f] succeeded"))
