"""Auto-assignment: round robin and least busy per team, capacity, presence,
exclusion, manual assignment winning, give-back after an offline grace."""

import threading
from datetime import timedelta

import pytest
from django.db import connection, connections
from django.utils import timezone

from accounts.models import User
from conversations import services, tasks
from conversations.delivery import doorbells, ratelimit
from conversations.models import (
    AgentRouting,
    Conversation,
    ConversationRouting,
    LiveEvent,
    TeamRouting,
)
from conversations.rules import assignment
from tests.factories import (
    ConversationFactory,
    TeamFactory,
    UserFactory,
    WhatsAppNumberFactory,
)
from tests.fixtures.inbound import process
from tests.fixtures.routing import (
    answer,
    auto_assignments,
    customers_body,
    loads,
    online_agent,
    route_team,
    waiting_conversation,
)


@pytest.fixture(autouse=True)
def forget_routing_doorbells():
    """A fresh test database hands out the same number ids again: doorbells
    an earlier run left in Redis would keep these from ringing."""
    redis = ratelimit.connection()
    for key in redis.scan_iter("routing:*"):
        redis.delete(key)


def assign(number) -> int:
    return services.assign_waiting_conversations(number_id=number.pk)


# --- The rule ----------------------------------------------------------------------


def test_round_robin_gives_everyone_one_before_anyone_a_second():
    seats = [
        assignment.Seat(agent_id=i, load=0, capacity=5, last_turn=0) for i in (1, 2, 3)
    ]
    order = []
    for turn in range(1, 7):
        seat = assignment.pick(seats, assignment.ROUND_ROBIN)
        assignment.take(seat, turn)
        order.append(seat.agent_id)
    assert order == [1, 2, 3, 1, 2, 3]


def test_least_busy_picks_the_agent_with_fewest_and_skips_the_full():
    seats = [
        assignment.Seat(agent_id=1, load=3, capacity=5, last_turn=1),
        assignment.Seat(agent_id=2, load=1, capacity=5, last_turn=9),
        assignment.Seat(agent_id=3, load=0, capacity=0, last_turn=0),
    ]
    assert assignment.pick(seats, assignment.LEAST_BUSY).agent_id == 2
    assert assignment.pick(seats[2:], assignment.LEAST_BUSY) is None


# --- Assigning -------------------------------------------------------------------


def test_round_robin_spreads_a_team_queue_over_its_online_agents(team, number):
    route_team(team)
    agents = [online_agent(team, name) for name in ("ada", "bo", "cy")]
    conversations = [waiting_conversation(number) for _ in range(7)]

    assert assign(number) == 7

    assert sorted(loads(agents).values()) == [2, 2, 3]
    first = Conversation.objects.get(pk=conversations[0].pk)
    assert first.assignee == agents[0]
    assert first.team == team
    routing = ConversationRouting.objects.get(conversation=first)
    assert routing.assigned_to == agents[0] and routing.manual is False
    event = LiveEvent.objects.filter(conversation=first).latest("id")
    assert event.data["auto"] is True and event.data["assignee"] == agents[0].pk


def test_round_robin_continues_where_the_last_run_stopped(team, number):
    route_team(team)
    ada, bo = online_agent(team, "ada"), online_agent(team, "bo")
    waiting_conversation(number)
    assign(number)
    second = waiting_conversation(number)
    assign(number)
    assert Conversation.objects.get(pk=second.pk).assignee == bo
    third = waiting_conversation(number)
    assign(number)
    assert Conversation.objects.get(pk=third.pk).assignee == ada


def test_least_busy_gives_the_next_conversation_to_the_freest_agent(team, number):
    route_team(team, TeamRouting.Mode.LEAST_BUSY)
    busy, free = online_agent(team, "busy"), online_agent(team, "free")
    for _ in range(3):
        waiting_conversation(number, assignee=busy, status="open")
    waiting_conversation(number, assignee=free, status="open")
    newcomers = [waiting_conversation(number) for _ in range(2)]

    assign(number)

    assert {Conversation.objects.get(pk=c.pk).assignee for c in newcomers} == {free}
    assert loads([busy, free]) == {"busy": 3, "free": 3}


def test_nobody_is_pushed_past_capacity_and_the_rest_waits(team, number):
    route_team(team, capacity=2)
    agents = [online_agent(team, "ada"), online_agent(team, "bo")]
    AgentRouting.objects.create(agent=agents[1], capacity=1)
    for _ in range(5):
        waiting_conversation(number)

    assert assign(number) == 3
    assert loads(agents) == {"ada": 2, "bo": 1}
    assert Conversation.objects.filter(assignee__isnull=True).count() == 2


def test_resolving_frees_capacity_for_the_next_waiting_one(
    team, number, monkeypatch, django_capture_on_commit_callbacks
):
    route_team(team, capacity=1)
    ada = online_agent(team, "ada")
    first, second = waiting_conversation(number), waiting_conversation(number)
    assign(number)
    first.refresh_from_db()
    assert first.assignee == ada

    rung = []
    monkeypatch.setattr(doorbells, "ring_routing", rung.append)
    with django_capture_on_commit_callbacks(execute=True):
        services.change_status(conversation=first, status="resolved", by=ada)
    assert rung == [number.pk]
    assign(number)
    assert Conversation.objects.get(pk=second.pk).assignee == ada


def test_only_online_agents_with_a_tab_open_are_assigned(team, number):
    route_team(team)
    online = online_agent(team, "online")
    online_agent(team, "away", availability=User.Availability.AWAY)
    online_agent(team, "no_tab", connected=False)
    online_agent(team, "inactive", is_active=False)
    excluded = online_agent(team, "excluded")
    AgentRouting.objects.create(agent=excluded, excluded=True)
    for _ in range(4):
        waiting_conversation(number)

    assign(number)

    assert set(Conversation.objects.values_list("assignee__username", flat=True)) == {
        online.username
    }


def test_nobody_online_leaves_the_queue_waiting(team, number):
    route_team(team)
    online_agent(team, "gone", connected=False)
    waiting_conversation(number)
    assert assign(number) == 0


def test_teams_without_routing_and_other_teams_conversations_are_left_alone(
    team, number
):
    online_agent(team, "ada")
    waiting_conversation(number)
    assert assign(number) == 0

    route_team(team)
    other = TeamFactory(name="Billing")
    number.teams.add(other)
    theirs = waiting_conversation(number, team=other)
    assert assign(number) == 1
    assert Conversation.objects.get(pk=theirs.pk).assignee is None


def test_a_conversation_without_team_joins_the_first_routing_team_by_name(number):
    billing, accounts = TeamFactory(name="Billing"), TeamFactory(name="Accounts")
    number.teams.add(billing, accounts)
    route_team(billing)
    route_team(accounts)
    online_agent(billing, "bill")
    clerk = online_agent(accounts, "clerk")
    conversation = waiting_conversation(number)

    assign(number)

    conversation.refresh_from_db()
    assert (conversation.team, conversation.assignee) == (accounts, clerk)


def test_a_business_notification_nobody_answered_is_not_routed(team, number):
    route_team(team)
    online_agent(team, "ada")
    ConversationFactory(number=number)
    assert assign(number) == 0


# --- Manual assignment wins ------------------------------------------------------


def test_a_conversation_a_person_unassigned_stays_with_the_team(team, number):
    route_team(team)
    ada = online_agent(team, "ada")
    conversation = waiting_conversation(number)
    assign(number)
    conversation.refresh_from_db()
    services.assign_conversation(conversation=conversation, by=ada, assignee=None)

    assert assign(number) == 0
    assert Conversation.objects.get(pk=conversation.pk).assignee is None


def test_a_person_assigning_first_wins_over_the_run(team, number):
    route_team(team)
    online_agent(team, "ada")
    lead = online_agent(team, "lead")
    conversation = waiting_conversation(number)
    services.assign_conversation(conversation=conversation, by=lead, assignee=lead)

    assert assign(number) == 0
    assert Conversation.objects.get(pk=conversation.pk).assignee == lead


# --- Giving back -------------------------------------------------------------------


def test_an_offline_agent_gives_unanswered_conversations_back_after_the_grace(
    team, number
):
    route_team(team, offline_grace_minutes=10)
    ada = online_agent(team, "ada")
    unanswered, answered = waiting_conversation(number), waiting_conversation(number)
    assign(number)
    answer(Conversation.objects.get(pk=answered.pk), ada)
    User.objects.filter(pk=ada.pk).update(connected=False)
    start = timezone.now()

    assert services.give_back_conversations(now=start) == 0
    assert services.give_back_conversations(now=start + timedelta(minutes=9)) == 0
    assert services.give_back_conversations(now=start + timedelta(minutes=10)) == 1

    unanswered.refresh_from_db()
    assert unanswered.assignee is None and unanswered.team == team
    assert Conversation.objects.get(pk=answered.pk).assignee == ada
    event = LiveEvent.objects.filter(conversation=unanswered).latest("id")
    assert event.data["given_back_by"] == ada.pk


def test_coming_back_within_the_grace_keeps_the_conversations(team, number):
    route_team(team, offline_grace_minutes=10)
    ada = online_agent(team, "ada")
    conversation = waiting_conversation(number)
    assign(number)
    start = timezone.now()
    User.objects.filter(pk=ada.pk).update(availability=User.Availability.AWAY)
    services.give_back_conversations(now=start)
    User.objects.filter(pk=ada.pk).update(availability=User.Availability.ONLINE)
    services.give_back_conversations(now=start + timedelta(minutes=5))
    User.objects.filter(pk=ada.pk).update(availability=User.Availability.AWAY)

    assert services.give_back_conversations(now=start + timedelta(minutes=12)) == 0
    assert Conversation.objects.get(pk=conversation.pk).assignee == ada


def test_manually_assigned_conversations_are_never_given_back(team, number):
    route_team(team, offline_grace_minutes=1)
    ada = online_agent(team, "ada")
    conversation = waiting_conversation(number)
    services.assign_conversation(conversation=conversation, by=ada, assignee=ada)
    User.objects.filter(pk=ada.pk).update(connected=False)
    start = timezone.now()
    services.give_back_conversations(now=start)

    assert services.give_back_conversations(now=start + timedelta(hours=1)) == 0
    assert Conversation.objects.get(pk=conversation.pk).assignee == ada


def test_the_sweep_reassigns_what_an_offline_agent_gave_back(team, number):
    route_team(team, offline_grace_minutes=1)
    ada, bo = online_agent(team, "ada"), online_agent(team, "bo")
    AgentRouting.objects.create(agent=bo, excluded=True)
    conversation = waiting_conversation(number)
    assign(number)
    User.objects.filter(pk=ada.pk).update(connected=False)
    AgentRouting.objects.filter(agent=bo).update(excluded=False)
    start = timezone.now()
    services.route_conversations(now=start)

    assert services.route_conversations(now=start + timedelta(minutes=1)) == 1
    assert Conversation.objects.get(pk=conversation.pk).assignee == bo


# --- Doorbells and tasks -----------------------------------------------------------


def test_a_new_conversation_from_the_webhook_rings_routing_after_commit(
    team, number, monkeypatch, django_capture_on_commit_callbacks
):
    rung = []
    monkeypatch.setattr(
        doorbells, "ring", lambda task, *args, **kw: rung.append((task, args))
    )
    with django_capture_on_commit_callbacks(execute=True):
        process(customers_body(number, ["4915100000001"]), app=number.app)
    assert rung == []

    route_team(team)
    with django_capture_on_commit_callbacks(execute=True):
        process(customers_body(number, ["4915100000002"], 1), app=number.app)
    assert rung == [(doorbells.ASSIGN_WAITING_CONVERSATIONS, (number.pk,))]
    assert (
        tasks.assign_waiting_conversations.name
        == doorbells.ASSIGN_WAITING_CONVERSATIONS
    )


def test_an_agent_coming_online_rings_routing_for_their_numbers(
    team, number, monkeypatch, django_capture_on_commit_callbacks
):
    route_team(team)
    agent = UserFactory(
        username="late", availability=User.Availability.AWAY, connected=True
    )
    agent.teams.add(team)
    rung = []
    monkeypatch.setattr(doorbells, "ring_routing", rung.append)
    with django_capture_on_commit_callbacks(execute=True):
        services.set_availability(user=agent, availability="online")
    assert rung == [number.pk]


def test_the_routing_sweep_is_scheduled(settings):
    entry = settings.CELERY_BEAT_SCHEDULE["route-conversations"]
    assert entry["task"] == tasks.route_conversations.name
    assert entry["schedule"] <= 60


# --- Bursts and concurrency ---------------------------------------------------------


def test_a_burst_of_1000_through_the_webhook_over_10_agents_of_capacity_50(
    team, number, monkeypatch, django_capture_on_commit_callbacks
):
    """Every conversation is assigned exactly once, nobody ever holds more
    than 50, and round robin keeps the agents within one of each other."""
    route_team(team, capacity=50)
    agents = [online_agent(team, f"agent{i:02d}") for i in range(10)]
    rung = []
    monkeypatch.setattr(doorbells, "ring_routing", rung.append)
    wa_ids = [f"49152{i:07d}" for i in range(1000)]
    for start in range(0, 1000, 100):
        with django_capture_on_commit_callbacks(execute=True):
            process(
                customers_body(number, wa_ids[start : start + 100], start),
                app=number.app,
            )
    assert Conversation.objects.count() == 1000 and set(rung) == {number.pk}

    assert tasks.assign_waiting_conversations.run(number.pk) is None
    held = loads(agents)
    assert set(held.values()) == {50}
    assert Conversation.objects.filter(assignee__isnull=True).count() == 500

    # Agents work through their queues; each resolution makes room for one more.
    while Conversation.objects.filter(assignee__isnull=True).exists():
        for agent in agents:
            done = Conversation.objects.filter(assignee=agent, status="open").first()
            services.change_status(conversation=done, status="resolved", by=agent)
        assign(number)
        held = loads(agents)
        assert max(held.values()) <= 50
        assert max(held.values()) - min(held.values()) <= 1

    assert Conversation.objects.filter(assignee__isnull=True).count() == 0
    counts = auto_assignments()
    assert len(counts) == 1000 and set(counts.values()) == {1}
    per_agent = [Conversation.objects.filter(assignee=a).count() for a in agents]
    assert max(per_agent) - min(per_agent) <= 1


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="the guarantee rests on PostgreSQL's row locks; SQLite runs one writer",
)
@pytest.mark.django_db(transaction=True)
def test_concurrent_workers_never_push_an_agent_past_capacity():
    """Eight workers route two numbers that share the same agents at once,
    while customers keep writing: nobody goes past capacity, no conversation
    is assigned twice."""
    team = TeamFactory(name="Support")
    numbers = [WhatsAppNumberFactory(), WhatsAppNumberFactory()]
    for number in numbers:
        number.teams.add(team)
    route_team(team, capacity=15)
    agents = [online_agent(team, f"agent{i}") for i in range(6)]
    for index in range(120):
        waiting_conversation(numbers[index % 2])

    barrier = threading.Barrier(8)
    errors = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for round_ in range(6):
                number = numbers[(index + round_) % 2]
                if index % 4 == 0:
                    waiting_conversation(number)
                services.assign_waiting_conversations(number_id=number.pk)
        except Exception as exc:
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)

    assert not errors
    assert set(loads(agents).values()) == {15}
    counts = auto_assignments()
    assert len(counts) == 90 and set(counts.values()) == {1}
    assert ConversationRouting.objects.filter(assigned_to__isnull=False).count() == 90
