"""helpdesk.settings plus the few overrides tests need.

Tests talk to the real database (DATABASE_URL, SQLite by default) and the
real Redis (REDIS_URL, started by the test command when unset).
"""

import os
import tempfile

# The tests run on the development defaults (its key, localhost, plain HTTP,
# static files from the source folders), which exist only with DEBUG on;
# helpdesk.settings leaves it off unless told. Set here, before the import,
# it also reaches the processes tests start. (pytest-django still runs the
# tests themselves with settings.DEBUG off, as Django's runner does.)
os.environ.setdefault("DEBUG", "1")

from helpdesk.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
MEDIA_ROOT = tempfile.mkdtemp(prefix="helpdesk-test-media-")
STORAGES["staticfiles"] = {  # noqa: F405
    "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
}

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":  # noqa: F405
    # A file, not memory: live servers and workers in other threads must see
    # the same test database.
    DATABASES["default"]["TEST"] = {  # noqa: F405
        "NAME": str(VAR_DIR / "test-helpdesk.sqlite3")  # noqa: F405
    }

# In-thread test workers (celery.contrib.testing) must close each task's
# database connection as before: kept open (CELERY_DB_REUSE_MAX), the worker
# threads' connections outlive the test and PostgreSQL refuses to drop the
# test database at the end of the session.
CELERY_DB_REUSE_MAX = None
