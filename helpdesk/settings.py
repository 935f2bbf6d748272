"""The one settings module: every deploy-specific value comes from the environment.

DEBUG is off unless the environment turns it on (the run command and the
tests do). With DEBUG off, SECRET_KEY and ALLOWED_HOSTS must be set, and the
helpdesk expects to sit behind a TLS-terminating proxy; the development
defaults (a published SECRET_KEY, localhost) exist only with DEBUG on.
"""

import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF
from django.core.exceptions import ImproperlyConfigured
from kombu import Exchange, Queue

BASE_DIR = Path(__file__).resolve().parent.parent
# Runtime data of the embedded mode (SQLite file, uploaded media, embedded
# Redis); ignored by git.
VAR_DIR = Path(os.environ.get("HELPDESK_VAR_DIR", BASE_DIR / "var"))


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ImproperlyConfigured(f"{name} must be 1/0 or true/false, not {value!r}")


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be a whole number, not {value!r}"
        ) from None


def env_rate(name: str, default: str) -> str:
    """A DRF throttle rate such as `100/second` or `60/minute`, checked at
    start rather than at the first request."""
    value = os.environ.get(name, "").strip() or default
    if not re.fullmatch(r"[1-9]\d*/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(
            f"{name} must be requests/period such as 100/second, not {value!r}"
        )
    return value


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        return float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}") from None


# Off unless asked for: a production start that forgot it must not serve
# Django's debug pages, nor run on the development key below.
DEBUG = env_bool("DEBUG", False)

SECRET_KEY = os.environ.get("SECRET_KEY", "")
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY must be set when DEBUG is off (in development, "
            "set DEBUG=1: `make run` and `make test` do)"
        )
    SECRET_KEY = "insecure-development-key-never-use-in-production"  # noqa: S105
# What an error shows of the settings, the request and each frame's
# variables, with DEBUG on too: never a password of a connection URL.
DEFAULT_EXCEPTION_REPORTER_FILTER = "helpdesk.security.ExceptionReporterFilter"

ALLOWED_HOSTS = env_list(
    "ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else []
)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    # daphne replaces runserver with an ASGI server, so development and
    # production serve WebSockets the same way.
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    # {% partialdef %}: the workspace's fragments, one source of markup.
    "template_partials",
    "channels",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    # The Content-Security-Policy header (see "Security" below).
    "csp",
    # Counts failed logins and locks out guessers (see "Logins" below).
    "axes",
    "accounts",
    "conversations",
]

MIDDLEWARE = [
    # First: every log line of the request carries its id.
    "helpdesk.logs.RequestIdMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "accounts.middleware.AgentTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into its answer.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "helpdesk.urls"
WSGI_APPLICATION = None
ASGI_APPLICATION = "helpdesk.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------
# The process kind decides connection handling: under ASGI every request runs
# in a fresh thread, so persistent connections would leak until PostgreSQL
# refuses new clients; a pool is the fix there. Workers and commands keep one
# persistent connection per process. helpdesk/asgi.py sets the kind.
HELPDESK_PROCESS = os.environ.get("HELPDESK_PROCESS", "")

# Parsed straight from the environment: no setting keeps the raw URL and its
# password (DATABASES' PASSWORD is hidden from error pages by name).
_database = dj_database_url.parse(
    os.environ.get("DATABASE_URL", f"sqlite:///{VAR_DIR / 'helpdesk.sqlite3'}")
)
if _database["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web server read while a worker writes; IMMEDIATE
    # transactions wait for the write lock instead of failing with "database
    # is locked" when daphne, the worker and beat write at once.
    _database["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    _database["CONN_MAX_AGE"] = 0
elif _database["ENGINE"] == "django.db.backends.postgresql":
    if HELPDESK_PROCESS == "asgi" and env_bool("DATABASE_POOL", True):
        _database["OPTIONS"] = {
            "pool": {
                "min_size": 2,
                "max_size": env_int("DATABASE_POOL_MAX_SIZE", 20),
                "timeout": 10,
            }
        }
        _database["CONN_MAX_AGE"] = 0
    else:
        _database["CONN_MAX_AGE"] = env_int("CONN_MAX_AGE", 60)
        _database["CONN_HEALTH_CHECKS"] = True
DATABASES = {"default": _database}
# The webhook endpoint's own asyncio pool, per server process, on PostgreSQL
# (conversations/whatsapp/webhooks.py): one INSERT per webhook, so a few
# connections carry thousands of acknowledgements a second.
WEBHOOK_DATABASE_POOL_SIZE = env_int("WEBHOOK_DATABASE_POOL_SIZE", 10)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {
        "NAME": "django.contrib.auth.password_validation."
        "UserAttributeSimilarityValidator"
    },
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "login"

# --- Logins: lockout after failed passwords (django-axes) --------------------
# Every password login (/accounts/login/, /admin/login/) goes through
# authenticate(); axes' backend refuses it while its username and address
# are locked out. The API takes tokens, never passwords, so it has nothing
# to guess (docs/operations.md, Logins).
# OneReadModelBackend is ModelBackend reading permissions in one query; the
# stock ModelBackend stays listed so sessions it signed in stay valid, and
# asking it costs nothing: both keep the same per-request cache on the user.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "accounts.backends.OneReadModelBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
# Counted from the last failure: a guesser who keeps trying stays locked.
AXES_COOLOFF_TIME = timedelta(minutes=env_float("LOGIN_COOLOFF_MINUTES", 15.0))


def login_lockout_parameters(value: str) -> list[str | list[str]]:
    """LOGIN_LOCKOUT_PARAMETERS: comma-separated, each `username`,
    `ip_address` or both joined by `+` (counted together)."""
    parameters: list[str | list[str]] = []
    for item in value.split(","):
        names = [name.strip() for name in item.split("+") if name.strip()]
        unknown = set(names) - {"username", "ip_address"}
        if not names or unknown:
            raise ImproperlyConfigured(
                "LOGIN_LOCKOUT_PARAMETERS takes username, ip_address or"
                f" username+ip_address, comma-separated, not {value!r}"
            )
        parameters.append(names[0] if len(names) == 1 else names)
    return parameters


# A username from one address: the guesser is stopped, while the agent at
# their desk, and colleagues behind the guesser's office address, still log
# in. By username alone anyone could lock any agent out; by address alone
# one office behind one NAT would lock itself out.
AXES_LOCKOUT_PARAMETERS = login_lockout_parameters(
    os.environ.get("LOGIN_LOCKOUT_PARAMETERS", "username+ip_address")
)
# A successful login forgets that pair's earlier typos.
AXES_RESET_ON_SUCCESS = True
# REMOTE_ADDR, as the ASGI server set it from the trusted proxy's headers;
# never a header a client could make up.
AXES_CLIENT_IP_CALLABLE = "helpdesk.security.client_ip_address"
AXES_LOCKOUT_CALLABLE = "accounts.views.locked_out"

LANGUAGE_CODE = "en-us"
TIME_ZONE = os.environ.get("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media files -------------------------------------------------
STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", VAR_DIR / "staticfiles"))
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", VAR_DIR / "media"))
# Media is customer data: it is served only through an authenticated view,
# never from a public URL, so MEDIA_URL is deliberately not routed.
MEDIA_URL = "/media-not-public/"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if not DEBUG
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}
# In development whitenoise serves straight from the source folders, so no
# collectstatic is needed before `make run`.
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG
# Meta posts webhook bodies of up to 3 MB.
DATA_UPLOAD_MAX_MEMORY_SIZE = 4 * 1024 * 1024
# Overrides of the largest file per kind of upload (conversations/uploads.py).
UPLOAD_LIMITS: dict[str, int] = {}

# --- Redis: Celery broker and channel layer ---------------------------------
# The limiters and the webhook endpoint read it; error pages hide it (and
# mask its password in CHANNEL_LAYERS and CACHES): helpdesk/security.py.
REDIS_URL = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0")

CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            "hosts": [
                {
                    "address": REDIS_URL,
                    # The async pool's default of 100 connections refuses
                    # sockets past the hundredth agent, and a 5 s socket
                    # timeout races the layer's own 5 s blocking reads.
                    "max_connections": 1000,
                    "socket_timeout": None,
                }
            ],
            # Bursts past the default capacity of 100 are dropped silently;
            # live events are also stored, so a tab can always catch up.
            "capacity": env_int("CHANNEL_LAYER_CAPACITY", 1000),
            "expiry": 60,
        },
    }
}

CELERY_BROKER_URL = REDIS_URL
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
# Tasks are idempotent, so they are acknowledged after they ran: a worker
# killed mid-task leaves its message to be redelivered, not lost.
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = env_int("CELERY_WORKER_PREFETCH_MULTIPLIER", 4)
# Unset, Celery's Django fixup closes the database connection before and
# after every task, so each task opened a new PostgreSQL connection (a backend
# started for it: several ms, more than processing a webhook event). Set, the
# fixup closes them only every this many tasks, and helpdesk/celery.py drops
# unusable or expired (CONN_MAX_AGE) connections around each task instead.
CELERY_DB_REUSE_MAX = env_int("CELERY_DB_REUSE_MAX", 1000)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BROKER_TRANSPORT_OPTIONS = {
    # Longest a task may run before Redis hands it to another worker.
    "visibility_timeout": 3600,
    # A frozen Redis must not hold up a caller: publishing gives up quickly,
    # and the sweepers re-queue from the database.
    "socket_timeout": env_float("CELERY_BROKER_SOCKET_TIMEOUT", 5.0),
    "socket_connect_timeout": env_float("CELERY_BROKER_CONNECT_TIMEOUT", 2.0),
}
CELERY_TASK_DEFAULT_QUEUE = "default"
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
# Media downloads have a queue of their own, so a backlog of large files
# never delays webhook processing or replies; so has outbound delivery, so a
# webhook backlog (~3 status webhooks per send) never delays replies and a
# bulk send never delays inbound processing. Workers consume all of them
# (helpdesk/processes.py: QUEUES), or dedicated workers take one queue each.
DELIVERY_TASKS = (
    "conversations.tasks.deliver_messages",
    "conversations.tasks.deliver_message",
    "conversations.tasks.sweep_deliveries",
    "conversations.tasks.send_read_receipt",
    "conversations.tasks.send_typing",
)
CELERY_TASK_ROUTES = {
    "conversations.tasks.download_media": {"queue": "media"},
    **{name: {"queue": "delivery"} for name in DELIVERY_TASKS},
}
# Stored webhook events are claimed in batches and applied as sets
# (conversations/services/webhook_events.py). Off, each event the doorbell
# names is processed on its own, as before sets: a way back should a set
# misbehave, and the benchmark's baseline.
WEBHOOK_SETS = env_bool("WEBHOOK_SETS", True)
# Every queue declared, so `celery -A helpdesk worker` without -Q consumes
# all three (each as Celery would create it when missing: a direct exchange
# of its name); dedicated workers still name theirs with -Q.
CELERY_TASK_QUEUES = tuple(
    Queue(name, Exchange(name, type="direct"), routing_key=name)
    for name in ("default", "media", "delivery")
)
CELERY_BEAT_SCHEDULE = {
    # Queues stored webhook events that were never processed (the publish
    # was lost, Redis was down) or failed, with backoff per attempt.
    "sweep-webhook-events": {
        "task": "conversations.tasks.sweep_webhook_events",
        "schedule": env_float("WEBHOOK_SWEEP_SECONDS", 30.0),
    },
    "sweep-media-downloads": {
        "task": "conversations.tasks.sweep_media_downloads",
        "schedule": 300.0,
    },
    # Outbound: re-queues due retries and turns sends whose worker died
    # (lease expired) into `unknown`.
    "sweep-deliveries": {
        "task": "conversations.tasks.sweep_deliveries",
        "schedule": env_float("DELIVERY_SWEEP_SECONDS", 2.0),
    },
    "sync-templates": {
        "task": "conversations.tasks.sync_templates",
        "schedule": env_float("TEMPLATE_SYNC_SECONDS", 3600.0),
    },
    # Snoozed conversations reopen (and show up live) at most a minute late.
    "wake-snoozed-conversations": {
        "task": "conversations.tasks.wake_snoozed_conversations",
        "schedule": env_float("SNOOZE_WAKE_SECONDS", 60.0),
    },
    # Auto-assignment: offline agents give conversations back, and waiting
    # ones reach agents who came online or freed capacity.
    "route-conversations": {
        "task": "conversations.tasks.route_conversations",
        "schedule": env_float("ROUTING_SWEEP_SECONDS", 30.0),
    },
    # Customers who write while closed get the away reply this quickly.
    "send-away-replies": {
        "task": "conversations.tasks.send_away_replies",
        "schedule": env_float("AWAY_REPLY_SWEEP_SECONDS", 15.0),
    },
    # Due times, breaches and window-aware escalations stay current.
    "refresh-service-levels": {
        "task": "conversations.tasks.refresh_service_levels",
        "schedule": env_float("SERVICE_LEVEL_SWEEP_SECONDS", 30.0),
    },
    # Agents whose server died with their tabs open show as offline.
    "close-stale-tabs": {
        "task": "conversations.tasks.close_stale_tabs",
        "schedule": 60.0,
    },
}
# A server process says which of its tabs are still connected three times in
# this long; a tab not heard of for this long was left open by a server that
# died.
LIVE_TAB_STALE_SECONDS = env_float("LIVE_TAB_STALE_SECONDS", 90.0)
# An agent who closes their last tab shows as offline after this long, unless
# a new one opens meanwhile (opening a conversation loads a new page).
LIVE_TAB_GRACE_SECONDS = env_float("LIVE_TAB_GRACE_SECONDS", 10.0)
# A tab says hello (catch-up and its search) on connecting and when it is
# shown again: each socket may send this many at once, then one every this
# many seconds (conversations/live/consumers.py). Typing is relayed to
# colleagues a few at once, then once per interval per socket (the page
# sends it every 3 s).
LIVE_HELLO_BURST = env_int("LIVE_HELLO_BURST", 10)
LIVE_HELLO_INTERVAL_SECONDS = env_float("LIVE_HELLO_INTERVAL_SECONDS", 3.0)
LIVE_TYPING_INTERVAL_SECONDS = env_float("LIVE_TYPING_INTERVAL_SECONDS", 2.0)

# --- WhatsApp Cloud API -----------------------------------------------------
WHATSAPP_GRAPH_API_URL = os.environ.get(
    "WHATSAPP_GRAPH_API_URL", "https://graph.facebook.com"
).rstrip("/")
WHATSAPP_GRAPH_API_VERSION = os.environ.get("WHATSAPP_GRAPH_API_VERSION", "v24.0")
# Development only: the WhatsApp sandbox's phone page may move the clock that
# business hours are read by, to show out-of-hours behaviour without waiting
# (docs/sandbox.md). Honoured only with DEBUG on and the Graph API at a
# loopback address (the sandbox); `make run` turns it on with its sandbox.
SANDBOX_CLOCK = env_bool("SANDBOX_CLOCK", False)
WHATSAPP_GRAPH_API_TIMEOUT = env_float("WHATSAPP_GRAPH_API_TIMEOUT", 20.0)
WHATSAPP_GRAPH_API_CONNECT_TIMEOUT = env_float(
    "WHATSAPP_GRAPH_API_CONNECT_TIMEOUT", 5.0
)
# Where media URLs in Meta's answers may point: the access token goes with
# the download, so to these origins only. A bare host means HTTPS on 443;
# development and tests add the sandbox's origin ("http://127.0.0.1:8001").
WHATSAPP_MEDIA_HOSTS = env_list("WHATSAPP_MEDIA_HOSTS", ["lookaside.fbsbx.com"])
# --- Outbound delivery ------------------------------------------------------
# Requests to Meta one delivery process keeps in flight. Meta is ~100 ms
# away, so N in flight carry at most N × 10 messages/s; 1,000 mps needs ~100.
WHATSAPP_DELIVERY_CONCURRENCY = env_int("WHATSAPP_DELIVERY_CONCURRENCY", 100)
# Messages one delivery run claims at a time (also bounded by the number's
# throughput), and how long a run keeps going before it hands over.
WHATSAPP_DELIVERY_BATCH = env_int("WHATSAPP_DELIVERY_BATCH", 200)
# Delivery runs one number may have at once, each in its own worker process
# (on PostgreSQL only: claims there skip rows another run holds). One
# process' Python tops out near one core, so a backlog at 1,000 mps needs two.
WHATSAPP_DELIVERY_RUNS_PER_NUMBER = env_int("WHATSAPP_DELIVERY_RUNS_PER_NUMBER", 2)
WHATSAPP_DELIVERY_RUN_SECONDS = env_float("WHATSAPP_DELIVERY_RUN_SECONDS", 60.0)
# A `sending` row whose worker has not reported back after this many seconds
# (past the request timeouts) belongs to a dead worker and becomes `unknown`.
WHATSAPP_DELIVERY_LEASE_SECONDS = env_float("WHATSAPP_DELIVERY_LEASE_SECONDS", 60.0)
# Retries of transient errors: capped exponential backoff with full jitter.
WHATSAPP_DELIVERY_MAX_ATTEMPTS = env_int("WHATSAPP_DELIVERY_MAX_ATTEMPTS", 8)
WHATSAPP_DELIVERY_BACKOFF_BASE = env_float("WHATSAPP_DELIVERY_BACKOFF_BASE", 1.0)
WHATSAPP_DELIVERY_BACKOFF_MAX = env_float("WHATSAPP_DELIVERY_BACKOFF_MAX", 300.0)
# The per-number limiter counts sends over this window instead of exactly one
# second, so a jitter of the network delay up to (window - 1 s) still keeps
# every wall-clock second at Meta under the number's throughput.
WHATSAPP_RATE_LIMIT_WINDOW = env_float("WHATSAPP_RATE_LIMIT_WINDOW", 1.1)
# Meta's pair rate limit: a burst of about 45 to one customer, then about
# one message every 6 s.
WHATSAPP_PAIR_BURST = env_int("WHATSAPP_PAIR_BURST", 45)
WHATSAPP_PAIR_INTERVAL = env_float("WHATSAPP_PAIR_INTERVAL", 6.0)
# A typing indicator at most this often per conversation (it lasts 25 s).
WHATSAPP_TYPING_INTERVAL = env_float("WHATSAPP_TYPING_INTERVAL", 20.0)

# --- Business: consent, notifications, delivery callbacks --------------------
# A customer message that is exactly one of these (ignoring case, accents,
# spaces and punctuation around it) opts the customer out of every purpose.
OPT_OUT_KEYWORDS = env_list(
    "OPT_OUT_KEYWORDS",
    [
        "STOP",
        "STOPP",
        "STOPPEN",
        "ARRÊT",
        "ARRETER",
        "ALTO",
        "BAJA",
        "PARAR",
        "CANCELAR",
        "UNSUBSCRIBE",
        "STOP ALL",
        "OPT OUT",
        "ABMELDEN",
        "DESABONNER",
        "DESINSCRIBIR",
        "DISISCRIVI",
        "ANNULLA ISCRIZIONE",
        "AFMELDEN",
        "SAIR",
    ],
)
# Titles of the marketing opt-out quick reply in marketing templates: tapping
# it opts the customer out of marketing only.
MARKETING_OPT_OUT_BUTTONS = env_list(
    "MARKETING_OPT_OUT_BUTTONS", ["Stop promotions", "STOP_PROMOTIONS"]
)
# Recipients one bulk notification request may name.
NOTIFICATIONS_BULK_MAX = env_int("NOTIFICATIONS_BULK_MAX", 10000)
# Signed status callbacks to the business: request timeouts, attempts and
# exponential backoff (base × 2^attempt, capped) between them.
BUSINESS_CALLBACK_CONNECT_TIMEOUT = env_float("BUSINESS_CALLBACK_CONNECT_TIMEOUT", 3.0)
BUSINESS_CALLBACK_TIMEOUT = env_float("BUSINESS_CALLBACK_TIMEOUT", 5.0)
BUSINESS_CALLBACK_MAX_ATTEMPTS = env_int("BUSINESS_CALLBACK_MAX_ATTEMPTS", 10)
BUSINESS_CALLBACK_BACKOFF_BASE = env_float("BUSINESS_CALLBACK_BACKOFF_BASE", 10.0)
BUSINESS_CALLBACK_BACKOFF_MAX = env_float("BUSINESS_CALLBACK_BACKOFF_MAX", 3600.0)
# Callback URLs that resolve to loopback, private or link-local addresses are
# refused (they would let an admin's URL reach the helpdesk's own network).
# On for business systems that live on the helpdesk's private network: every
# address is then allowed, so the network must restrict what it can reach.
BUSINESS_CALLBACK_ALLOW_PRIVATE_ADDRESSES = env_bool(
    "BUSINESS_CALLBACK_ALLOW_PRIVATE_ADDRESSES", False
)
# Distinct names for the choice sets the consent and notification endpoints
# share field names with (status, purpose).
SPECTACULAR_BUSINESS_ENUMS = {
    "ConsentStatusEnum": "conversations.models.ConsentRecord.Status",
    "PurposeEnum": "conversations.models.ConsentRecord.Purpose",
    "NotificationStatusEnum": [
        "queued",
        "sent",
        "delivered",
        "read",
        "failed",
        "unknown",
        "refused",
    ],
}
CELERY_BEAT_SCHEDULE["sweep-business-callbacks"] = {
    "task": "conversations.tasks.sweep_callbacks",
    "schedule": env_float("CALLBACK_SWEEP_SECONDS", 10.0),
}

# A resolved conversation reopens when the customer writes again within this
# many hours; later messages open a new conversation.
CONVERSATION_REOPEN_HOURS = env_float("CONVERSATION_REOPEN_HOURS", 24.0)

# --- REST API ---------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "conversations.api.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # Every error body has a machine-readable "code" next to "detail".
    "EXCEPTION_HANDLER": "conversations.api.exceptions.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "conversations.api.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    # Per token (its user), in a window of one second: a bulk integration
    # keeps its 50+ requests a second, a leaked or looping token cannot
    # fire an hour's allowance in a burst. Anonymous requests (the schema,
    # the docs) per address: REMOTE_ADDR, as the ASGI server set it from the
    # trusted proxy (NUM_PROXIES 0: DRF reads no forwarded header itself).
    # Windows stay short because DRF keeps one timestamp per request in it.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "conversations.api.throttling.UserRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": env_rate("API_RATE_LIMIT", "100/second"),
        "anon": env_rate("API_ANON_RATE_LIMIT", "60/minute"),
    },
    "NUM_PROXIES": 0,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "WhatsApp Helpdesk API",
    "DESCRIPTION": "Conversations, messages, customers, consent and notifications.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    # No badge from validator.swagger.io: it would send the schema's URL
    # there, and the policy below allows no scripts or requests elsewhere.
    "SWAGGER_UI_SETTINGS": {"deepLinking": True, "validatorUrl": None},
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "ENUM_NAME_OVERRIDES": SPECTACULAR_BUSINESS_ENUMS,
}
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.redis.RedisCache",
        "LOCATION": REDIS_URL,
        "OPTIONS": {"socket_timeout": 2, "socket_connect_timeout": 2},
    }
}

# --- Security ---------------------------------------------------------------
# How long a login lasts, in seconds: a working day and then some, so agents
# log in once per shift and an unattended browser does not stay logged in
# for Django's two weeks. Pages and live sockets (re-checked every minute)
# end with it.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 12 * 3600)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = False
X_FRAME_OPTIONS = "DENY"
# Content-Security-Policy (django-csp), on every response: scripts, styles,
# fonts, requests (the workspace's WebSocket too) and media from the helpdesk
# itself, never inline and never eval'd (no page needs it: the workspace's
# behaviour lives in static/js, htmx runs with allowEval off, the API docs
# load their script from a URL). Images also from https: (the thumbnails of
# click-to-WhatsApp ads are on Meta's servers; CSP_IMG_SOURCES replaces it,
# e.g. with https://*.fbcdn.net) and data: (Swagger UI's icons). No frames,
# no plugins, no <base>. CSP_REPORT_URI collects violations;
# CSP_REPORT_ONLY=1 only reports them, to try a change of the policy.
_csp_directives = {
    "default-src": [SELF],
    "script-src": [SELF],
    "style-src": [SELF],
    "img-src": [SELF, "data:", *env_list("CSP_IMG_SOURCES", ["https:"])],
    "media-src": [SELF],
    "font-src": [SELF],
    "connect-src": [SELF],
    "object-src": [NONE],
    "base-uri": [NONE],
    "frame-ancestors": [NONE],
    "form-action": [SELF],
}
if os.environ.get("CSP_REPORT_URI"):
    _csp_directives["report-uri"] = [os.environ["CSP_REPORT_URI"]]
if env_bool("CSP_REPORT_ONLY", False):
    CONTENT_SECURITY_POLICY_REPORT_ONLY = {"DIRECTIVES": _csp_directives}
else:
    CONTENT_SECURITY_POLICY = {"DIRECTIVES": _csp_directives}
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if not DEBUG:
    # Behind a TLS-terminating proxy that sets X-Forwarded-Proto.
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    # Probes and the scraper ask over plain HTTP on the internal network.
    SECURE_REDIRECT_EXEMPT = [r"^healthz$", r"^readyz$", r"^metrics$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    # Preloading is a promise browsers keep for months, so it is the
    # operator's call; the check that nags for it is silenced.
    SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
    SILENCED_SYSTEM_CHECKS = ["security.W021"]

# --- Operations (helpdesk/health.py, docs/operations.md) -----------------------
# /metrics answers only `Authorization: Bearer <this>` when set.
METRICS_TOKEN = os.environ.get("METRICS_TOKEN", "")
# /readyz answers 503 while the oldest webhook event not processed yet is
# older than this: the workers are down or far behind.
READY_MAX_EVENT_LAG_SECONDS = env_float("READY_MAX_EVENT_LAG_SECONDS", 300.0)

# Retention (conversations/services/retention.py): processed webhook events
# and live events are deleted past these ages, media files past theirs (0:
# kept for ever), by beat every RETENTION_SWEEP_SECONDS and by
# `manage.py purge_expired`, RETENTION_BATCH rows per transaction.
WEBHOOK_EVENT_RETENTION_DAYS = env_float("WEBHOOK_EVENT_RETENTION_DAYS", 30.0)
LIVE_EVENT_RETENTION_DAYS = env_float("LIVE_EVENT_RETENTION_DAYS", 7.0)
MEDIA_RETENTION_DAYS = env_float("MEDIA_RETENTION_DAYS", 0.0)
RETENTION_BATCH = env_int("RETENTION_BATCH", 1000)
CELERY_BEAT_SCHEDULE["purge-expired"] = {
    "task": "conversations.tasks.purge_expired",
    "schedule": env_float("RETENTION_SWEEP_SECONDS", 3600.0),
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        "json": {"()": "helpdesk.logs.JsonFormatter"},
    },
    # Beat's sweepers every few seconds are logged at DEBUG only (helpdesk/logs.py).
    "filters": {"routine_tasks": {"()": "helpdesk.logs.RoutineTasks"}},
    "handlers": {
        "console": {
            "class": "logging.StreamHandler",
            # LOG_FORMAT=json: one JSON object per line, with request ids.
            "formatter": "json" if os.environ.get("LOG_FORMAT") == "json" else "plain",
            "filters": ["routine_tasks"],
        }
    },
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        # Its start-up banner, in every process; failures and lockouts still
        # log (axes.handlers, axes.signals).
        "axes.apps": {"level": "WARNING"},
    },
}
