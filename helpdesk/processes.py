"""The helpdesk's processes: the one place their command lines are written.

Production runs three kinds (docs/operations.md says how many of each):

- web: uvicorn serving helpdesk.asgi (HTTP, WebSockets, Meta's webhooks);
- worker: a Celery worker consuming every queue (QUEUES);
- beat: Celery beat, which schedules the sweepers; exactly one.

`python -m helpdesk.launcher commands` prints them. The launcher's `run`
(which serves with daphne, as in development), the benchmarks and the tests
build their processes with the same functions: what differs (a port, a
pool, a queue of a test's own) is an argument, and only options of their own
(a worker's node name, beat inside a worker) are appended.

Each function returns the program's argv as an operator types it
(`celery -A helpdesk worker ...`); in_this_python() makes it `python -m ...`
under this interpreter, so a subprocess runs in the same virtualenv.
"""

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ASGI_APPLICATION = "helpdesk.asgi:application"
CELERY_APP = "helpdesk"
# Every queue a task is routed to (CELERY_TASK_DEFAULT_QUEUE and
# CELERY_TASK_ROUTES): a worker consumes all of them unless dedicated
# workers cover each one, so a webhook backlog never delays replies and a
# large download delays neither.
QUEUES = ("default", "media", "delivery")
# For a worker that works alone (benchmarks, tests): no gossip, mingle or
# heartbeat with other workers, so it starts at once and stays quiet.
ALONE = ("--without-gossip", "--without-mingle", "--without-heartbeat")


@dataclass(frozen=True)
class Command:
    """One kind of production process: its name, what it is for, its argv."""

    name: str
    about: str
    argv: list[str]


def web_command(
    *,
    host: str = "0.0.0.0",  # noqa: S104 - behind the proxy, on every interface
    port: int = 8000,
    workers: int | None = None,
    proxy: str | None = None,
    log_level: str | None = None,
    app: str = ASGI_APPLICATION,
) -> list[str]:
    """uvicorn serving `app`: `workers` processes on one port, no access log.

    `proxy` is the address of the TLS-terminating proxy whose forwarded
    headers are trusted. Without `workers`, one process.
    """
    argv = ["uvicorn", app, "--host", host, "--port", str(port)]
    if workers is not None:
        argv += ["--workers", str(workers)]
    argv.append("--no-access-log")
    if proxy is not None:
        argv += ["--proxy-headers", "--forwarded-allow-ips", proxy]
    if log_level is not None:
        argv += ["--log-level", log_level]
    return argv


def daphne_command(
    *,
    host: str | None = None,
    port: int | None = None,
    fd: int | None = None,
    verbosity: int | None = None,
    app: str = ASGI_APPLICATION,
) -> list[str]:
    """daphne serving `app` on host and port, or on an inherited socket `fd`."""
    argv = ["daphne"]
    if host is not None:
        argv += ["-b", host]
    if port is not None:
        argv += ["-p", str(port)]
    if fd is not None:
        argv += ["--fd", str(fd)]
    if verbosity is not None:
        argv += ["-v", str(verbosity)]
    return [*argv, app]


def worker_command(
    *,
    queues: Sequence[str] | None = QUEUES,
    pool: str | None = None,
    concurrency: int | None = None,
    alone: bool = False,
    log_level: str | None = None,
) -> list[str]:
    """A Celery worker consuming `queues`.

    None leaves out -Q, so the worker consumes every queue settings declare
    (CELERY_TASK_QUEUES), as `celery -A helpdesk worker` does.
    Without `pool` and `concurrency`, Celery's prefork with one process per
    core.
    """
    argv = ["celery", "-A", CELERY_APP, "worker"]
    if queues is not None:
        argv += ["-Q", ",".join(queues)]
    if pool is not None:
        argv += ["-P", pool]
    if concurrency is not None:
        argv += ["-c", str(concurrency)]
    if alone:
        argv += ALONE
    if log_level is not None:
        argv += ["-l", log_level]
    return argv


def beat_command(
    *, log_level: str | None = None, schedule: Path | str | None = None
) -> list[str]:
    """Celery beat; `schedule` is the file where it keeps its last runs."""
    argv = ["celery", "-A", CELERY_APP, "beat"]
    if log_level is not None:
        argv += ["-l", log_level]
    if schedule is not None:
        argv += ["--schedule", str(schedule)]
    return argv


def production_commands(*, cores: int, proxy: str) -> list[Command]:
    """Production's processes, for machines of `cores` cores behind `proxy`."""
    return [
        Command(
            "web",
            "HTTP, WebSockets and Meta's webhooks; one process per core,"
            " on each web machine",
            web_command(workers=cores, proxy=proxy),
        ),
        # Processing a webhook event waits on PostgreSQL for about half of
        # its time, so two processes per core keep the cores busy.
        Command(
            "worker",
            "every queue (webhooks, media, delivery); 2 processes per core,"
            " on each worker machine",
            worker_command(concurrency=2 * cores),
        ),
        Command(
            "beat",
            "schedules the sweepers; exactly one per deployment",
            beat_command(),
        ),
    ]


def in_this_python(argv: list[str]) -> list[str]:
    """`argv` run as a module of this interpreter (`python -m celery ...`)."""
    return [sys.executable, "-m", *argv]
