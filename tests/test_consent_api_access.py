"""Who may record consent through the API, and for which customers: the
permission conversations.record_consent, and only the customers the user may
see; new customers only from a user who sees every number."""

import pytest
from django.contrib.auth.models import Permission

from conversations.models import ConsentRecord, Customer
from tests.factories import (
    ConversationFactory,
    CustomerFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)
from tests.fixtures.business import CONSENT_URL, api_client_for

OURS = "+4917011111111"
THEIRS = "+4917022222222"
NEW = "+4917033333333"


def grant(user, *codenames: str):
    user.user_permissions.add(
        *Permission.objects.filter(
            codename__in=codenames, content_type__app_label="conversations"
        )
    )
    return user


def opt_in(api, phone: str, purpose: str = "marketing"):
    return api.post(
        CONSENT_URL,
        {"phone": phone, "purpose": purpose, "status": "opt_in", "source": "web_form"},
        format="json",
    )


@pytest.fixture
def customers(number):
    """A customer of the agent's team, and one of another team's."""
    ours = CustomerFactory(wa_id=OURS[1:], phone=OURS)
    ConversationFactory(customer=ours, number=number)
    billing = WhatsAppNumberFactory()
    billing.teams.add(TeamFactory(name="Billing"))
    theirs = CustomerFactory(wa_id=THEIRS[1:], phone=THEIRS)
    ConversationFactory(customer=theirs, number=billing)
    return {"ours": ours, "theirs": theirs}


def test_recording_consent_needs_the_permission(agent, customers):
    response = opt_in(api_client_for(agent), OURS)

    assert response.status_code == 403
    assert response.json()["code"] == "permission_denied"
    assert "conversations.record_consent" in response.json()["detail"]
    assert not ConsentRecord.objects.exists()


def test_another_teams_customer_is_answered_as_an_unknown_number(agent, customers):
    api = api_client_for(grant(agent, "record_consent"))
    known = set(Customer.objects.values_list("pk", flat=True))

    theirs, unknown = opt_in(api, THEIRS), opt_in(api, NEW)

    assert theirs.status_code == unknown.status_code == 404
    assert theirs.json() == unknown.json()
    assert theirs.json()["code"] == "not_found"
    assert str(customers["theirs"].pk) not in theirs.content.decode()
    assert not ConsentRecord.objects.exists()
    # Nobody was created for the unknown number either.
    assert set(Customer.objects.values_list("pk", flat=True)) == known


def test_an_agent_with_the_permission_records_for_their_teams_customer(
    agent, customers
):
    response = opt_in(api_client_for(grant(agent, "record_consent")), OURS)

    assert response.status_code == 201, response.content
    assert response.json()["customer"] == customers["ours"].pk
    record = ConsentRecord.objects.get()
    assert (record.customer, record.recorded_by) == (customers["ours"], agent)


def test_who_sees_every_number_records_for_anyone_and_creates_new_customers(
    db, customers
):
    system = grant(
        UserFactory(username="checkout"), "record_consent", "view_all_numbers"
    )
    api = api_client_for(system)

    assert opt_in(api, THEIRS).status_code == 201
    created = opt_in(api, NEW)

    assert created.status_code == 201
    assert Customer.objects.get(wa_id=NEW[1:]).pk == created.json()["customer"]


def test_the_ledger_of_another_teams_customer_is_a_404(agent, customers):
    for customer in customers.values():
        ConsentRecord.objects.create(
            customer=customer, purpose="utility", status="opt_in", source="checkout"
        )
    api = api_client_for(agent)

    theirs = api.get(f"/api/v1/customers/{customers['theirs'].pk}/consents/")
    ours = api.get(f"/api/v1/customers/{customers['ours'].pk}/consents/")

    assert theirs.status_code == 404
    assert ours.status_code == 200 and len(ours.json()["results"]) == 1


def test_the_schema_says_which_permission_and_what_a_404_means(client, db):
    document = client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    post = document["paths"]["/api/v1/consents/"]["post"]

    assert {"201", "400", "403", "404"} <= set(post["responses"])
    assert "conversations.record_consent" in post["description"]
    assert "conversations.view_all_numbers" in post["description"]
