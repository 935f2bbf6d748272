"""The business endpoints in the OpenAPI schema, fuzzed: no input gives a 5xx.

Schemathesis generates requests from /api/schema/ and calls the Django app
in-process (WSGI) with an API user allowed to send notifications, a number
and approved templates in place, so generated bodies reach the deep checks
(templates, parameters, consent, idempotency), not only the validation.
The number is the Cloud API sandbox's, so a media upload that passes the
checks reaches a real Graph API server (a 502 would mean Meta refused it).
The number of examples is bounded so this runs in seconds.
"""

import pytest
import schemathesis
from django.contrib.auth.models import Permission
from django.core import signals
from django.core.handlers.wsgi import WSGIHandler
from django.db import close_old_connections
from drf_spectacular.validation import validate_schema
from hypothesis import HealthCheck, settings
from rest_framework.authtoken.models import Token

from conversations import services
from conversations.models import MessageTemplate
from tests.factories import CustomerFactory, UserFactory
from tests.fixtures.business import BUSINESS_SYSTEM_PERMISSIONS

pytestmark = pytest.mark.e2e

BUSINESS_PATHS = r"^/api/v1/(notifications|consents|customers/\{id\}/consents|media)"


@pytest.fixture(autouse=True)
def business_data(db, sandbox_number):
    number = sandbox_number
    for name, category, components in (
        (
            "boarding_pass",
            "UTILITY",
            [
                {"type": "HEADER", "format": "DOCUMENT"},
                {"type": "BODY", "text": "Hi {{1}}, your flight {{2}}"},
            ],
        ),
        ("order_update", "UTILITY", [{"type": "BODY", "text": "Order {{1}}"}]),
        ("spring_sale", "MARKETING", [{"type": "BODY", "text": "20% off"}]),
    ):
        MessageTemplate.objects.create(
            waba_id=number.waba_id,
            name=name,
            language="en",
            category=category,
            status="APPROVED",
            components=components,
        )
    customer = CustomerFactory(wa_id="4917012345678")
    for purpose in ("utility", "marketing"):
        services.record_consent(
            customer=customer, purpose=purpose, status="opt_in", source="checkout"
        )
    # As Django's test client does: the app must not close the test's
    # database connection (its transaction) at each request's start and end.
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        signals.request_started.connect(close_old_connections)
        signals.request_finished.connect(close_old_connections)


@pytest.fixture
def token(db):
    user = UserFactory(username="fuzzing-system")
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=BUSINESS_SYSTEM_PERMISSIONS,
            content_type__app_label="conversations",
        )
    )
    return Token.objects.create(user=user).key


# Read when the module is collected: the schema view needs no database.
schema = schemathesis.openapi.from_wsgi("/api/schema/", WSGIHandler())


@schema.include(path_regex=BUSINESS_PATHS).parametrize()
@settings(
    max_examples=40,
    deadline=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)
def test_business_endpoints_never_answer_5xx(case, token):
    response = case.call(headers={"Authorization": f"Token {token}"})
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} -> {response.status_code}: "
        f"{response.text[:500]}"
    )


@pytest.mark.django_db
def test_the_schema_documents_the_notifications_endpoint(client):
    response = client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    document = response.json()
    post = document["paths"]["/api/v1/notifications/"]["post"]
    assert {"202", "400", "403", "409", "422"} <= set(post["responses"])
    assert any(p["name"] == "Idempotency-Key" for p in post["parameters"])
    assert "/api/v1/notifications/{id}/" in document["paths"]
    assert "/api/v1/consents/" in document["paths"]
    assert "/api/v1/customers/{id}/consents/" in document["paths"]
    # The whole document is valid against the OpenAPI 3.0 JSON schema.
    validate_schema(document)
