"""Guessing passwords: the login pages lock a username from an address after
a few failures, for a cool-off period, and admins can lift the lock."""

from datetime import timedelta

import pytest
from django.conf import settings
from django.contrib.auth import SESSION_KEY
from django.core.management import call_command
from django.db import connections
from django.test import Client, RequestFactory
from django.utils import timezone

from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

AGENT_PASSWORD = "agent-password"  # noqa: S105 (tests.factories.UserFactory)
ATTACKER = "203.0.113.7"


def log_in(client, path, username, password, address=ATTACKER, **headers):
    return client.post(
        path,
        {"username": username, "password": password},
        REMOTE_ADDR=address,
        **headers,
    )


def logged_in(client) -> bool:
    return SESSION_KEY in client.session


def guess(client, path, username, times, address=ATTACKER, **headers):
    for attempt in range(times):
        response = log_in(
            client, path, username, f"wrong-{attempt}", address, **headers
        )
        assert not logged_in(client)
    return response


@pytest.mark.parametrize("path", ["/accounts/login/", "/admin/login/"])
def test_forty_wrong_passwords_then_the_right_one_does_not_log_in(client, path):
    UserFactory(username="anna", is_staff=True)
    guess(client, path, "anna", 40)
    response = log_in(client, path, "anna", AGENT_PASSWORD)
    assert response.status_code == 429
    assert not logged_in(client)


def test_the_lock_comes_after_the_failure_limit_and_says_when_to_retry(client):
    UserFactory(username="anna")
    limit = settings.AXES_FAILURE_LIMIT
    response = guess(client, "/accounts/login/", "anna", limit - 1)
    assert response.status_code == 200
    assert "didn't match" in response.content.decode()
    response = log_in(client, "/accounts/login/", "anna", "wrong-again")
    assert response.status_code == 429
    assert int(response["Retry-After"]) == settings.AXES_COOLOFF_TIME.total_seconds()
    page = response.content.decode()
    assert "Too many failed logins" in page
    assert "15 minutes" in page
    assert log_in(client, "/accounts/login/", "anna", AGENT_PASSWORD).status_code == (
        429
    )


def test_the_lock_is_for_that_username_from_that_address(client):
    UserFactory(username="anna")
    UserFactory(username="bruno")
    guess(client, "/accounts/login/", "anna", 10)
    # Anna at her desk is not locked out by someone guessing elsewhere...
    response = log_in(client, "/accounts/login/", "anna", AGENT_PASSWORD, "192.0.2.1")
    assert response.status_code == 302
    assert logged_in(client)
    client.logout()
    # ...nor is a colleague behind the guesser's address.
    response = log_in(client, "/accounts/login/", "bruno", AGENT_PASSWORD)
    assert response.status_code == 302


def test_a_made_up_forwarded_header_does_not_escape_the_lock(client):
    """The ASGI server takes the client's address from the trusted proxy's
    headers; the helpdesk reads REMOTE_ADDR only, whatever else is sent."""
    UserFactory(username="anna")
    for attempt in range(10):
        log_in(
            client,
            "/accounts/login/",
            "anna",
            "wrong",
            HTTP_X_FORWARDED_FOR=f"198.51.100.{attempt}",
            HTTP_X_REAL_IP=f"198.51.100.{attempt}",
        )
    response = log_in(
        client,
        "/accounts/login/",
        "anna",
        AGENT_PASSWORD,
        HTTP_X_FORWARDED_FOR="198.51.100.200",
    )
    assert response.status_code == 429


def test_addresses_in_one_ipv6_block_count_together(client):
    UserFactory(username="anna")
    for host in range(10):
        log_in(client, "/accounts/login/", "anna", "wrong", f"2001:db8:1:2::{host:x}")
    response = log_in(
        client, "/accounts/login/", "anna", AGENT_PASSWORD, "2001:db8:1:2:ffff::1"
    )
    assert response.status_code == 429
    response = log_in(client, "/accounts/login/", "anna", AGENT_PASSWORD, "2001:db8::1")
    assert response.status_code == 302


@pytest.mark.parametrize(
    ("remote", "counted_as"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::"),
        ("::ffff:203.0.113.7", "203.0.113.7"),
        ("", None),
    ],
)
def test_the_counted_address_is_remote_addr(remote, counted_as):
    from helpdesk.security import client_ip_address

    request = RequestFactory().get(
        "/", REMOTE_ADDR=remote, HTTP_X_FORWARDED_FOR="198.51.100.1"
    )
    assert client_ip_address(request) == counted_as


def test_the_lock_ends_after_the_cool_off(client):
    from axes.models import AccessAttempt

    UserFactory(username="anna")
    guess(client, "/accounts/login/", "anna", 10)
    assert log_in(client, "/accounts/login/", "anna", AGENT_PASSWORD).status_code == (
        429
    )
    # As if the cool-off had passed since the last failure.
    AccessAttempt.objects.update(
        attempt_time=timezone.now() - settings.AXES_COOLOFF_TIME - timedelta(seconds=1)
    )
    response = log_in(client, "/accounts/login/", "anna", AGENT_PASSWORD)
    assert response.status_code == 302
    assert logged_in(client)


def test_a_successful_login_forgets_earlier_typos(client):
    UserFactory(username="anna")
    limit = settings.AXES_FAILURE_LIMIT
    for _ in range(3):
        guess(client, "/accounts/login/", "anna", limit - 1)
        response = log_in(client, "/accounts/login/", "anna", AGENT_PASSWORD)
        assert response.status_code == 302
        assert logged_in(client)
        client.logout()


def test_an_admin_unlocks_a_username_from_the_shell(client):
    UserFactory(username="anna")
    guess(client, "/accounts/login/", "anna", 10)
    call_command("axes_reset_username", "anna")
    response = log_in(client, "/accounts/login/", "anna", AGENT_PASSWORD)
    assert response.status_code == 302


def test_an_admin_unlocks_by_deleting_the_attempt_in_the_admin(admin_client):
    from axes.models import AccessAttempt

    client = Client()
    UserFactory(username="anna")
    guess(client, "/accounts/login/", "anna", 10)
    attempt = AccessAttempt.objects.get(username="anna")
    listing = admin_client.get("/admin/axes/accessattempt/?locked_out=yes")
    assert listing.status_code == 200
    assert "anna" in listing.content.decode()
    response = admin_client.post(
        f"/admin/axes/accessattempt/{attempt.pk}/delete/", {"post": "yes"}
    )
    assert response.status_code == 302
    response = log_in(client, "/accounts/login/", "anna", AGENT_PASSWORD)
    assert response.status_code == 302


@pytest.mark.django_db(transaction=True)
async def test_the_lockout_answers_the_same_under_asgi(async_client):
    """Production serves Django over ASGI, where axes' middleware runs its
    async path."""
    from asgiref.sync import sync_to_async

    await sync_to_async(UserFactory)(username="anna")
    for attempt in range(settings.AXES_FAILURE_LIMIT):
        await async_client.post(
            "/accounts/login/", {"username": "anna", "password": f"wrong-{attempt}"}
        )
    response = await async_client.post(
        "/accounts/login/", {"username": "anna", "password": AGENT_PASSWORD}
    )
    assert response.status_code == 429
    assert "Too many failed logins" in response.content.decode()
    inbox = await async_client.get("/")
    assert inbox.status_code == 302
    assert inbox.url.startswith("/accounts/login/")
    # Let go of the connection the requests' thread opened.
    await sync_to_async(connections.close_all)()


def test_lockout_parameters_come_from_the_environment():
    from django.core.exceptions import ImproperlyConfigured

    from helpdesk.settings import login_lockout_parameters

    assert login_lockout_parameters("username+ip_address") == [
        ["username", "ip_address"]
    ]
    assert login_lockout_parameters(" username + ip_address , ip_address") == [
        ["username", "ip_address"],
        "ip_address",
    ]
    with pytest.raises(ImproperlyConfigured, match="LOGIN_LOCKOUT_PARAMETERS"):
        login_lockout_parameters("username+user_agent")
