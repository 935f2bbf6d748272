import pytest

from tests.factories import TeamFactory, UserFactory, WhatsAppNumberFactory


@pytest.fixture
def team(db):
    return TeamFactory(name="Support")


@pytest.fixture
def number(db, team):
    number = WhatsAppNumberFactory()
    number.teams.add(team)
    return number


@pytest.fixture
def agent(db, team):
    agent = UserFactory(username="anna")
    agent.teams.add(team)
    return agent


@pytest.fixture
def admin_user(db):
    return UserFactory(username="root", is_staff=True, is_superuser=True)


@pytest.fixture
def agent_client(client, agent):
    client.force_login(agent)
    return client


@pytest.fixture
def admin_client(client, admin_user):
    client.force_login(admin_user)
    return client


@pytest.fixture
def meta_number(db, team):
    """The business number the payload fixtures (tests/payloads/) are addressed to."""
    from tests.inbound_helpers import (
        FIXTURE_DISPLAY_NUMBER,
        FIXTURE_PHONE_NUMBER_ID,
        FIXTURE_WABA_ID,
    )

    number = WhatsAppNumberFactory(
        phone_number_id=FIXTURE_PHONE_NUMBER_ID,
        waba_id=FIXTURE_WABA_ID,
        display_phone_number=FIXTURE_DISPLAY_NUMBER,
    )
    number.teams.add(team)
    return number


@pytest.fixture(autouse=True)
def fresh_event_cache(monkeypatch):
    """Each test its own cache of rendered live events: a flushed test database
    hands out the same event ids again (SQLite), so a cached one would be stale."""
    from conversations.live.cache import EventCache

    cache = EventCache()
    monkeypatch.setattr("conversations.live.cache.event_cache", cache)
    yield
    # Its loader thread's connection would keep the test database in use.
    cache.close()


@pytest.fixture(autouse=True)
def fresh_channel_layer():
    """Each test its own channel layer instance. channels_redis binds its
    receive lock to the event loop of the first receiver and keeps it while
    any receiver is waiting; a server has one loop, but each async test has
    its own, and an inbox hub a previous test left waiting handed the next
    test's loop that lock ("bound to a different event loop")."""
    from channels.layers import channel_layers

    channel_layers.backends.clear()
    yield
    channel_layers.backends.clear()
