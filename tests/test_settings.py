import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from helpdesk.settings import env_bool, env_float, env_int, env_list

BASE_DIR = Path(__file__).resolve().parent.parent

# The production variables docs/operations.md lists, and nothing else: DEBUG
# is left unset, as an operator who never heard of it would.
PRODUCTION = {
    "SECRET_KEY": "a-long-random-production-secret-key-0123456789-abcdefghijklmnop",
    "ALLOWED_HOSTS": "helpdesk.example.com",
    "CSRF_TRUSTED_ORIGINS": "https://helpdesk.example.com",
    "DATABASE_URL": "postgres://postgres@127.0.0.1:5432/helpdesk",
    "REDIS_URL": "redis://127.0.0.1:6379/0",
}


def manage(*args, env):
    clean = {
        key: value
        for key, value in os.environ.items()
        # HELPDESK_PROCESS: importing helpdesk.asgi in this process set it.
        if key
        not in {"DJANGO_SETTINGS_MODULE", "DEBUG", "HELPDESK_PROCESS", *PRODUCTION}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=BASE_DIR,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("1", True), ("true", True), ("Yes", True), ("0", False), ("false", False)],
)
def test_booleans_accept_one_zero_and_words(monkeypatch, raw, expected):
    monkeypatch.setenv("SOME_FLAG", raw)
    assert env_bool("SOME_FLAG", not expected) is expected


def test_unset_or_empty_values_take_the_default(monkeypatch):
    monkeypatch.delenv("SOME_FLAG", raising=False)
    assert env_bool("SOME_FLAG", True) is True
    monkeypatch.setenv("SOME_FLAG", " ")
    assert env_bool("SOME_FLAG", False) is False
    assert env_int("SOME_FLAG", 7) == 7


def test_a_misspelt_boolean_is_an_error_not_a_guess(monkeypatch):
    monkeypatch.setenv("SOME_FLAG", "ture")
    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG must be 1/0"):
        env_bool("SOME_FLAG", False)


def test_numbers_are_checked(monkeypatch):
    monkeypatch.setenv("SOME_NUMBER", "twenty")
    with pytest.raises(ImproperlyConfigured, match="whole number"):
        env_int("SOME_NUMBER", 1)
    with pytest.raises(ImproperlyConfigured, match="must be a number"):
        env_float("SOME_NUMBER", 1.0)
    monkeypatch.setenv("SOME_NUMBER", "2.5")
    assert env_float("SOME_NUMBER", 1.0) == 2.5


def test_lists_are_comma_separated_and_trimmed(monkeypatch):
    monkeypatch.setenv("SOME_LIST", " a.example.com, ,b.example.com ")
    assert env_list("SOME_LIST", []) == ["a.example.com", "b.example.com"]


@pytest.mark.e2e
def test_the_documented_production_variables_pass_the_deployment_checks():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=PRODUCTION)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout


@pytest.mark.e2e
@pytest.mark.parametrize("debug", [None, "0"])
def test_debug_off_without_a_secret_key_refuses_to_start(debug):
    env = {key: value for key, value in PRODUCTION.items() if key != "SECRET_KEY"}
    if debug is not None:
        env["DEBUG"] = debug
    result = manage("check", env=env)
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


# A request that fails inside Django: the database named here does not exist,
# so loading the session behind /admin/ raises. The URLs carry passwords that
# must never reach a page.
DATABASE_PASSWORD = "db-password-never-shown"  # noqa: S105
REDIS_PASSWORD = "redis-password-never-shown"  # noqa: S105
BROKEN = {
    "DATABASE_URL": (
        f"postgres://postgres:{DATABASE_PASSWORD}@127.0.0.1:5432/helpdesk_missing_db"
    ),
    "REDIS_URL": f"redis://:{REDIS_PASSWORD}@127.0.0.1:6379/0",
}
FAILING_REQUEST = (
    "from django.test import Client;"
    "r = Client(raise_request_exception=False).get('/admin/',"
    " HTTP_HOST='helpdesk.example.com', HTTP_X_FORWARDED_PROTO='https',"
    " HTTP_ACCEPT='text/html',"
    " HTTP_COOKIE='sessionid=0123456789abcdefghijklmnopqrstuv');"
    "print(r.status_code, r['Content-Type']); print(r.content.decode())"
)


@pytest.mark.e2e
def test_a_start_without_debug_set_serves_no_debug_page():
    result = manage(
        "shell", "--no-imports", "-c", FAILING_REQUEST, env={**PRODUCTION, **BROKEN}
    )
    assert result.returncode == 0, result.stderr
    status, page = result.stdout.split("\n", 1)
    assert status.startswith("500 text/html")
    assert "<h1>Server Error (500)</h1>" in page
    assert "OperationalError" not in page
    assert "helpdesk_missing_db" not in page
    assert DATABASE_PASSWORD not in page


@pytest.mark.e2e
def test_the_debug_page_shows_no_connection_passwords():
    """With DEBUG on, the technical page lists the settings, the request and
    each frame's variables; none of them shows a password of a connection."""
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        FAILING_REQUEST,
        env={**PRODUCTION, **BROKEN, "DEBUG": "1"},
    )
    assert result.returncode == 0, result.stderr
    status, page = result.stdout.split("\n", 1)
    assert status.startswith("500 text/html")
    assert "OperationalError" in page
    assert "helpdesk_missing_db" in page
    assert DATABASE_PASSWORD not in page
    assert REDIS_PASSWORD not in page


def test_the_error_reporter_masks_credentials_wherever_they_are():
    from django.views.debug import get_default_exception_reporter_filter

    reporter = get_default_exception_reporter_filter()
    layers = {
        "default": {"CONFIG": {"hosts": [{"address": "redis://:pw1@redis:6379/0"}]}}
    }
    assert "pw1" not in repr(reporter.cleanse_setting("CHANNEL_LAYERS", layers))
    assert "redis:6379/0" in repr(reporter.cleanse_setting("CHANNEL_LAYERS", layers))
    cleansed = reporter.cleanse_setting(
        "CACHES", {"default": {"LOCATION": "rediss://user:pw2@cache.internal/1"}}
    )
    assert cleansed["default"]["LOCATION"] == (
        "rediss://user:********************@cache.internal/1"
    )
    for name in ("REDIS_URL", "CELERY_BROKER_URL", "SENTRY_DSN", "DATABASE_URL"):
        assert reporter.cleanse_setting(name, "x://a:b@c/d") == (
            reporter.cleansed_substitute
        )
    assert reporter.cleanse_setting("conninfo", "host=db password=pw3") == (
        "host=db password=********************"
    )


@pytest.mark.e2e
def test_the_database_and_graph_api_come_from_the_environment():
    code = (
        "from django.conf import settings as s;"
        "print(s.DATABASES['default']['ENGINE'], s.DATABASES['default']['NAME'],"
        " s.CELERY_BROKER_URL, s.WHATSAPP_GRAPH_API_URL, s.WHATSAPP_GRAPH_API_VERSION,"
        " s.WHATSAPP_GRAPH_API_TIMEOUT)"
    )
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        code,
        env={
            **PRODUCTION,
            "REDIS_URL": "redis://cache.internal:6380/2",
            "WHATSAPP_GRAPH_API_URL": "http://graph.test/",
            "WHATSAPP_GRAPH_API_VERSION": "v23.0",
            "WHATSAPP_GRAPH_API_TIMEOUT": "7.5",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split() == [
        "django.db.backends.postgresql",
        "helpdesk",
        "redis://cache.internal:6380/2",
        "http://graph.test",
        "v23.0",
        "7.5",
    ]


@pytest.mark.e2e
def test_the_security_limits_come_from_the_environment():
    code = (
        "from django.conf import settings as s;"
        "print(s.SESSION_COOKIE_AGE, s.AXES_FAILURE_LIMIT,"
        " int(s.AXES_COOLOFF_TIME.total_seconds()), s.AXES_LOCKOUT_PARAMETERS,"
        " s.REST_FRAMEWORK['DEFAULT_THROTTLE_RATES'], s.LIVE_HELLO_BURST,"
        " s.LIVE_HELLO_INTERVAL_SECONDS, sep='|')"
    )
    result = manage(
        "shell",
        "--no-imports",
        "-c",
        code,
        env={
            **PRODUCTION,
            "SESSION_COOKIE_AGE": "3600",
            "LOGIN_FAILURE_LIMIT": "8",
            "LOGIN_COOLOFF_MINUTES": "30",
            "LOGIN_LOCKOUT_PARAMETERS": "username+ip_address,ip_address",
            "API_RATE_LIMIT": "20/second",
            "API_ANON_RATE_LIMIT": "10/minute",
            "LIVE_HELLO_BURST": "4",
            "LIVE_HELLO_INTERVAL_SECONDS": "5",
        },
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1].split("|") == [
        "3600",
        "8",
        "1800",
        "[['username', 'ip_address'], 'ip_address']",
        "{'user': '20/second', 'anon': '10/minute'}",
        "4",
        "5.0",
    ]
