"""tests.settings for the processes a browser test starts (daphne, a worker).

Their Celery tasks go to a queue of the test's own, so workers of other test
runs sharing the same Redis never take them.
"""

import os

from tests.settings import *  # noqa: F403

_QUEUE = os.environ.get("HELPDESK_TEST_QUEUE", "default")
CELERY_TASK_DEFAULT_QUEUE = _QUEUE
CELERY_TASK_ROUTES = {
    name: {"queue": _QUEUE}
    for name in ("conversations.tasks.download_media", *DELIVERY_TASKS)  # noqa: F405
}
