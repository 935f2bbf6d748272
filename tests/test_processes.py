"""The production processes' command lines, written once in helpdesk.processes."""

import re
import shlex
from pathlib import Path

from django.conf import settings

from helpdesk import launcher, processes

BASE_DIR = Path(__file__).resolve().parent.parent


def test_the_production_worker_consumes_every_queue_a_task_is_routed_to():
    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    queues = routed | {settings.CELERY_TASK_DEFAULT_QUEUE}
    worker = next(
        command.argv
        for command in processes.production_commands(cores=2, proxy="10.0.0.2")
        if command.name == "worker"
    )
    assert set(worker[worker.index("-Q") + 1].split(",")) == queues


def test_the_operations_guide_shows_exactly_what_the_commands_command_prints(capsys):
    """docs/operations.md's example is the output of the command it shows."""
    guide = (BASE_DIR / "docs" / "operations.md").read_text()
    example = re.search(
        r"```console\n\$ (python -m helpdesk\.launcher commands[^\n]*)\n(.*?)```",
        guide,
        re.DOTALL,
    )
    assert example, "docs/operations.md shows no output of the commands command"
    args = shlex.split(example.group(1))[4:]

    assert launcher.print_commands(args) == 0
    assert capsys.readouterr().out == example.group(2)


def test_a_plain_worker_consumes_every_queue_a_task_is_routed_to():
    """`celery -A helpdesk worker` without -Q: the queues it consumes are the
    declared ones, and every routed queue is among them. A fresh app, as a
    worker process starts with: the test workers of other tests select their
    own queue on the shared one."""
    from celery import Celery

    app = Celery("helpdesk")
    app.config_from_object("django.conf:settings", namespace="CELERY")

    routed = {route["queue"] for route in settings.CELERY_TASK_ROUTES.values()}
    routed.add(settings.CELERY_TASK_DEFAULT_QUEUE)
    consumed = set(app.amqp.queues.consume_from or app.amqp.queues)
    assert consumed == routed == set(processes.QUEUES)
    for name in routed:
        assert app.amqp.queues[name].routing_key == name
