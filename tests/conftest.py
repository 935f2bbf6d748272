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
