"""Fixtures for the business's side: an API user allowed to send notifications,
the sandbox's templates synced, consent given through the API."""

import pytest
from django.contrib.auth.models import Permission
from django.core.management import call_command
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from accounts.models import Team
from conversations.models import Notification
from tests.factories import UserFactory

NOTIFY_URL = "/api/v1/notifications/"
CONSENT_URL = "/api/v1/consents/"
ANNA = "+4917012345678"
BEN = "+4917099887766"


def api_client_for(user) -> APIClient:
    client = APIClient()
    token, _ = Token.objects.get_or_create(user=user)
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


@pytest.fixture
def shop(db):
    """The shop's booking system: an API user with send_notification."""
    user = UserFactory(username="booking-system")
    user.user_permissions.add(
        Permission.objects.get(
            codename="send_notification", content_type__app_label="conversations"
        )
    )
    return user


@pytest.fixture
def shop_api(shop):
    return api_client_for(shop)


@pytest.fixture
def travel_desk(sandbox_number):
    team = Team.objects.create(name="Travel desk")
    sandbox_number.teams.add(team)
    return team


@pytest.fixture
def templates(sandbox_number):
    """The sandbox WABA's templates mirrored (boarding_pass, spring_sale, ...)."""
    call_command("sync_templates")


def consent(api, phone: str, purpose: str = "utility", status: str = "opt_in"):
    response = api.post(
        CONSENT_URL,
        {
            "phone": phone,
            "purpose": purpose,
            "status": status,
            "source": "checkout",
            "wording": f"Send me {purpose} messages on WhatsApp",
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    return response.json()


def boarding_pass(to=ANNA, **extra) -> dict:
    return {
        "to": to,
        "purpose": "utility",
        "template": {"name": "boarding_pass", "language": "en"},
        "parameters": {"body": ["Anna", "LH 2046"]},
        "document": {
            "link": "https://example.com/passes/4711.pdf",
            "filename": "boarding-pass.pdf",
        },
        "reference": "booking-4711",
        **extra,
    }


def notification(pk: int) -> Notification:
    return Notification.objects.select_related("message").get(pk=pk)
