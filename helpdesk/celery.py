"""The Celery app: workers process webhooks and deliver messages; beat sweeps."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun
from django.conf import settings
from django.db import close_old_connections

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "helpdesk.settings")

app = Celery("helpdesk")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(task=None, **kwargs):
    """What Django does around a request: drop connections that are broken
    or older than CONN_MAX_AGE, keep the rest (CELERY_DB_REUSE_MAX). Not for
    eager tasks, which run inside their caller's transaction."""
    if task is not None and getattr(task.request, "is_eager", False):
        return
    close_old_connections()


# The task that processes stored webhook events, a list of ids per message.
PROCESS_EVENTS_TASK = "conversations.tasks.process_webhook_events"


@task_prerun.connect
def _bind_request_ids(task=None, args=(), **kwargs):
    """With JSON logs, a task processing stored webhook events logs the
    request ids they arrived with (one indexed read per task)."""
    from helpdesk.logs import request_id

    request_id.set("")
    if task is None or task.name != PROCESS_EVENTS_TASK or not args:
        return
    if settings.LOGGING["handlers"]["console"]["formatter"] != "json":
        return
    from django.db import DatabaseError

    from conversations.models import WebhookEvent

    try:
        ids = list(
            WebhookEvent.objects.filter(pk__in=args[0]).values_list(
                "headers__x-request-id", flat=True
            )
        )
    except DatabaseError:
        # The task itself meets the same error and retries; its lines go
        # without ids.
        return
    request_id.set(",".join(sorted({str(i) for i in ids if i})))
