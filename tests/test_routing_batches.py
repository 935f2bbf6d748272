"""Routing's hooks on messages the webhook engine stores as a set: new and
reopened conversations are auto-assigned at once, survey answers and their
comments are recorded, and the away reply and service levels follow what
the set stored, as they do for messages stored one by one."""

import json
from datetime import UTC, datetime, time, timedelta

import pytest
from django.db import connection
from django.utils import timezone

from conversations import services, tasks
from conversations.delivery import doorbells, ratelimit
from conversations.models import (
    AutomaticMessage,
    BusinessHours,
    Conversation,
    Message,
    OpeningHours,
    SatisfactionRating,
    SatisfactionSurvey,
    ServiceLevel,
    ServicePolicy,
)
from conversations.services import inbound
from tests.factories import MessageFactory
from tests.fixtures.inbound import store_event
from tests.fixtures.routing import (
    auto_assignments,
    customers_body,
    loads,
    online_agent,
    route_team,
    waiting_conversation,
)

pytestmark = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="sets need PostgreSQL (SKIP LOCKED)"
)


@pytest.fixture(autouse=True)
def forget_routing_doorbells():
    """Doorbells an earlier run left in Redis would keep these from ringing."""
    redis = ratelimit.connection()
    for key in redis.scan_iter("routing:*"):
        redis.delete(key)


@pytest.fixture
def stored_as_sets(monkeypatch) -> list[str]:
    """The wamids inbound.receive_messages stored (the engine's set path)."""
    wamids: list[str] = []
    receive_messages = inbound.receive_messages

    def spy(**kwargs):
        stored = receive_messages(**kwargs)
        if stored is not None:
            wamids.extend(row.wamid for row in stored.messages)
        return stored

    monkeypatch.setattr(inbound, "receive_messages", spy)
    return wamids


def drain(*bodies, app) -> None:
    for body in bodies:
        store_event(body, app=app)
    services.drain_webhook_events(seconds=60)


def message_body(number, wa_id: str, message: dict) -> bytes:
    value = {
        "messaging_product": "whatsapp",
        "metadata": {
            "display_phone_number": number.display_phone_number.lstrip("+"),
            "phone_number_id": number.phone_number_id,
        },
        "contacts": [{"profile": {"name": "Kim"}, "wa_id": wa_id}],
        "messages": [{"from": wa_id, **message}],
    }
    body = {
        "object": "whatsapp_business_account",
        "entry": [
            {"id": number.waba_id, "changes": [{"field": "messages", "value": value}]}
        ],
    }
    return json.dumps(body).encode()


def text_body(number, wa_id: str, text: str, wamid: str, at: datetime | None = None):
    stamp = str(int((at or timezone.now()).timestamp()))
    return message_body(
        number,
        wa_id,
        {"id": wamid, "timestamp": stamp, "type": "text", "text": {"body": text}},
    )


# --- Auto-assignment ----------------------------------------------------------------


def test_new_conversations_of_a_batch_ring_routing_once_after_commit(
    team, number, monkeypatch, stored_as_sets, django_capture_on_commit_callbacks
):
    route_team(team)
    agents = [online_agent(team, "ann"), online_agent(team, "bo")]
    rung = []
    monkeypatch.setattr(
        doorbells, "ring", lambda task, *args, **kw: rung.append((task, args))
    )
    wa_ids = [f"4915200000{i:02d}" for i in range(4)]
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        drain(customers_body(number, wa_ids), app=number.app)
        assert rung == []  # nothing rings before the batch commits

    assert len(stored_as_sets) == 4 and callbacks
    assert rung == [(doorbells.ASSIGN_WAITING_CONVERSATIONS, (number.pk,))]
    tasks.assign_waiting_conversations.run(number.pk)
    assert loads(agents) == {"ann": 2, "bo": 2}


def test_a_conversation_a_batch_reopens_is_routed_again(
    team, number, monkeypatch, stored_as_sets, django_capture_on_commit_callbacks
):
    route_team(team)
    conversation = waiting_conversation(number, team=team)
    Conversation.objects.filter(pk=conversation.pk).update(
        status=Conversation.Status.RESOLVED, resolved_at=timezone.now()
    )
    rung = []
    monkeypatch.setattr(doorbells, "ring_routing", rung.append)
    with django_capture_on_commit_callbacks(execute=True):
        drain(
            text_body(number, conversation.customer.wa_id, "Again", "wamid.AGAIN"),
            app=number.app,
        )

    assert stored_as_sets == ["wamid.AGAIN"]
    assert Conversation.objects.get(pk=conversation.pk).status == "open"
    assert rung == [number.pk]


def test_a_batch_on_a_number_nobody_routes_rings_nothing(
    number, monkeypatch, stored_as_sets, django_capture_on_commit_callbacks
):
    rung = []
    monkeypatch.setattr(doorbells, "ring_routing", rung.append)
    with django_capture_on_commit_callbacks(execute=True):
        drain(customers_body(number, ["491520000100"]), app=number.app)
    assert len(stored_as_sets) == 1 and rung == []


def test_a_burst_of_1000_in_batches_is_assigned_exactly_once_within_capacity(
    team, number, monkeypatch, stored_as_sets, django_capture_on_commit_callbacks
):
    route_team(team, capacity=50)
    agents = [online_agent(team, f"agent{i:02d}") for i in range(10)]
    rung = []
    monkeypatch.setattr(doorbells, "ring_routing", rung.append)
    wa_ids = [f"49153{i:07d}" for i in range(1000)]
    bodies = [
        customers_body(number, wa_ids[start : start + 100], start)
        for start in range(0, 1000, 100)
    ]
    with django_capture_on_commit_callbacks(execute=True):
        drain(*bodies, app=number.app)

    assert len(stored_as_sets) == 1000 and set(rung) == {number.pk}
    tasks.assign_waiting_conversations.run(number.pk)
    assert set(loads(agents).values()) == {50}
    assert Conversation.objects.filter(assignee__isnull=True).count() == 500
    assert set(auto_assignments().values()) == {1}


# --- Satisfaction ------------------------------------------------------------------


def test_a_survey_answer_in_a_batch_is_recorded_and_its_comment_too(
    number, team, agent, stored_as_sets
):
    SatisfactionSurvey.objects.create(team=team)
    conversation = waiting_conversation(number, team=team, assignee=agent)
    services.change_status(conversation=conversation, status="resolved", by=agent)
    Message.objects.filter(
        conversation=conversation, automatic__kind=AutomaticMessage.Kind.CSAT
    ).update(wamid="wamid.SURVEY", status="delivered")
    wa_id = conversation.customer.wa_id
    answer = message_body(
        number,
        wa_id,
        {
            "id": "wamid.RATED",
            "timestamp": str(int(timezone.now().timestamp())),
            "type": "interactive",
            "context": {"from": number.display_phone_number, "id": "wamid.SURVEY"},
            "interactive": {
                "type": "list_reply",
                "list_reply": {"id": "csat-5", "title": "5 – Excellent"},
            },
        },
    )
    drain(answer, app=number.app)

    # The answer went one by one (the set does not take interactive replies).
    assert stored_as_sets == []
    rating = SatisfactionRating.objects.get(conversation=conversation)
    assert rating.score == 5
    assert Conversation.objects.get(pk=conversation.pk).status == "resolved"

    drain(text_body(number, wa_id, "Very helpful", "wamid.COMMENT"), app=number.app)

    assert stored_as_sets == ["wamid.COMMENT"]
    rating.refresh_from_db()
    assert rating.comment == "Very helpful"
    assert Conversation.objects.get(pk=conversation.pk).status == "open"


def test_only_the_first_message_of_a_reopening_batch_is_the_comment(
    number, team, agent, stored_as_sets
):
    conversation = waiting_conversation(number, team=team, assignee=agent)
    now = timezone.now()
    Conversation.objects.filter(pk=conversation.pk).update(
        status=Conversation.Status.RESOLVED, resolved_at=now
    )
    survey = MessageFactory(
        conversation=conversation, direction=Message.Direction.OUTBOUND, sender=None
    )
    rating = SatisfactionRating.objects.create(
        conversation=conversation,
        message=survey,
        team=team,
        agent=agent,
        score=2,
        answered_at=now,
    )
    wa_id = conversation.customer.wa_id
    drain(
        text_body(number, wa_id, "Too slow", "wamid.C1", now + timedelta(seconds=1)),
        text_body(number, wa_id, "Anyway", "wamid.C2", now + timedelta(seconds=2)),
        app=number.app,
    )

    assert sorted(stored_as_sets) == ["wamid.C1", "wamid.C2"]
    rating.refresh_from_db()
    assert rating.comment == "Too slow"


# --- Away reply and service levels ---------------------------------------------------


def test_a_message_stored_by_a_batch_at_night_gets_the_away_reply(
    number, stored_as_sets
):
    hours = BusinessHours.objects.create(
        name="Support", time_zone="UTC", number=number, away_message="We are closed."
    )
    OpeningHours.objects.bulk_create(
        OpeningHours(schedule=hours, weekday=day, opens=time(9), closes=time(17))
        for day in range(7)
    )
    night = datetime.combine(timezone.now().date(), time(3), tzinfo=UTC)
    if night > timezone.now():
        night -= timedelta(days=1)
    drain(
        text_body(number, "491520000200", "Hello?", "wamid.NIGHT", night),
        app=number.app,
    )

    assert stored_as_sets == ["wamid.NIGHT"]
    assert services.send_away_replies(now=night + timedelta(seconds=10)) == 1
    reply = Message.objects.get(automatic__kind=AutomaticMessage.Kind.AWAY)
    assert reply.conversation.customer.wa_id == "491520000200"
    assert reply.text == "We are closed."


def test_a_message_stored_by_a_batch_starts_the_next_response_clock(
    number, team, agent, stored_as_sets
):
    ServicePolicy.objects.create(
        name="Support",
        team=team,
        first_response_minutes=30,
        next_response_minutes=60,
        business_hours_only=False,
    )
    conversation = waiting_conversation(number, team=team, assignee=agent)
    services.send_reply(
        conversation=conversation, kind="text", content={"body": "Hi!"}, sender=agent
    )
    written = timezone.now().replace(microsecond=0) + timedelta(seconds=1)
    drain(
        text_body(number, conversation.customer.wa_id, "And?", "wamid.NEXT", written),
        app=number.app,
    )

    assert stored_as_sets == ["wamid.NEXT"]
    services.refresh_service_levels(now=written + timedelta(seconds=5))
    level = ServiceLevel.objects.get(conversation=conversation)
    assert level.first_response_met is True
    assert level.due_at == written + timedelta(minutes=60)
