import json
import re
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from rest_framework.authtoken.models import Token

from accounts.models import User
from conversations.models import (
    CannedResponse,
    Label,
    MetaApp,
    RateCard,
    WhatsAppNumber,
)

pytestmark = pytest.mark.django_db

NUMBER_ARGS = {
    "--phone-number-id": "106540352242922",
    "--display-phone-number": "+4930123456",
    "--waba-id": "102290129340398",
    "--access-token": "EAAtoken-one",
    "--app-secret": "secret-one",
    "--verify-token": "verify-one",
}


def add_number(**overrides) -> str:
    arguments = {**NUMBER_ARGS, **overrides}
    out = StringIO()
    flat = [part for pair in arguments.items() for part in pair if part is not None]
    call_command("add_whatsapp_number", *flat, stdout=out, stderr=StringIO())
    return out.getvalue()


def test_add_whatsapp_number_creates_the_number_and_its_app():
    output = add_number(**{"--name": "Support DE", "--throughput": "200"})
    number = WhatsAppNumber.objects.select_related("app").get()
    assert "Added Support DE (+4930123456)" in output
    assert number.phone_number_id == "106540352242922"
    assert number.throughput == 200
    assert number.access_token == "EAAtoken-one"
    assert number.app.app_secret == "secret-one"
    assert number.app.verify_token == "verify-one"


def test_add_whatsapp_number_twice_updates_instead_of_duplicating():
    add_number()
    output = add_number(**{"--access-token": "EAAtoken-two", "--app-secret": "s2"})
    assert "Updated" in output
    number = WhatsAppNumber.objects.select_related("app").get()
    assert number.access_token == "EAAtoken-two"
    assert number.app.app_secret == "s2"
    assert MetaApp.objects.count() == 1


def test_numbers_with_the_same_app_id_share_the_app_and_the_last_secret_wins():
    add_number(**{"--app-id": "555"})
    add_number(
        **{
            "--app-id": "555",
            "--phone-number-id": "106540352242923",
            "--display-phone-number": "+4930123457",
            "--app-secret": "rotated",
        }
    )
    app = MetaApp.objects.get()
    assert app.app_id == "555"
    assert app.numbers.count() == 2
    assert app.app_secret == "rotated"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"--phone-number-id": "12ab"}, "not a Meta id"),
        ({"--waba-id": "waba"}, "not a Meta id"),
        ({"--display-phone-number": "030 123456"}, "E.164"),
        ({"--display-phone-number": "+0123"}, "E.164"),
        ({"--throughput": "0"}, "between 1 and 1000"),
        ({"--throughput": "1001"}, "between 1 and 1000"),
        ({"--access-token": "   "}, "cannot be empty"),
        ({"--app-id": "my-app"}, "not a Meta id"),
    ],
)
def test_add_whatsapp_number_rejects_bad_input_clearly(overrides, message):
    with pytest.raises(CommandError, match=message):
        add_number(**overrides)
    assert WhatsAppNumber.objects.count() == 0
    assert MetaApp.objects.count() == 0


SECRET_FLAGS = ("--access-token", "--app-secret", "--verify-token")
SECRETS_IN_ENVIRONMENT = {
    "WHATSAPP_ACCESS_TOKEN": "EAAtoken-from-env",
    "WHATSAPP_APP_SECRET": "secret-from-env",
    "WHATSAPP_VERIFY_TOKEN": "verify-from-env",
}


def add_number_quietly(stdin=None, **overrides) -> tuple[str, str]:
    """add_whatsapp_number with the secrets left off the command line."""
    arguments = {
        **{k: v for k, v in NUMBER_ARGS.items() if k not in SECRET_FLAGS},
        **overrides,
    }
    flat = [part for pair in arguments.items() for part in pair if part is not None]
    out, err = StringIO(), StringIO()
    extra = {"stdin": stdin} if stdin is not None else {}
    call_command("add_whatsapp_number", *flat, stdout=out, stderr=err, **extra)
    return out.getvalue(), err.getvalue()


def test_the_secrets_can_come_from_the_environment(monkeypatch):
    for variable, value in SECRETS_IN_ENVIRONMENT.items():
        monkeypatch.setenv(variable, value)
    output, warnings = add_number_quietly()
    assert "Added" in output
    assert warnings == ""
    number = WhatsAppNumber.objects.select_related("app").get()
    assert number.access_token == "EAAtoken-from-env"
    assert number.app.app_secret == "secret-from-env"
    assert number.app.verify_token == "verify-from-env"
    assert "EAAtoken-from-env" not in output


def test_the_access_token_can_come_from_standard_input(monkeypatch):
    for variable, value in SECRETS_IN_ENVIRONMENT.items():
        monkeypatch.setenv(variable, value)
    add_number_quietly(
        stdin=StringIO("EAAtoken-typed\n"), **{"--access-token-stdin": None}
    )
    assert WhatsAppNumber.objects.get().access_token == "EAAtoken-typed"


def test_the_old_options_still_work_but_warn():
    err = StringIO()
    flat = [part for pair in NUMBER_ARGS.items() for part in pair]
    call_command("add_whatsapp_number", *flat, stdout=StringIO(), stderr=err)
    assert WhatsAppNumber.objects.get().access_token == "EAAtoken-one"
    for option, variable in (
        ("--access-token", "WHATSAPP_ACCESS_TOKEN"),
        ("--app-secret", "WHATSAPP_APP_SECRET"),
        ("--verify-token", "WHATSAPP_VERIFY_TOKEN"),
    ):
        assert f"{option} puts the" in err.getvalue()
        assert f"set {variable} instead" in err.getvalue()


def test_a_missing_secret_is_named(monkeypatch):
    for variable in SECRETS_IN_ENVIRONMENT:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("WHATSAPP_APP_SECRET", "s")
    monkeypatch.setenv("WHATSAPP_VERIFY_TOKEN", "v")
    with pytest.raises(CommandError, match="WHATSAPP_ACCESS_TOKEN"):
        add_number_quietly()
    with pytest.raises(CommandError, match="cannot be empty"):
        add_number_quietly(stdin=StringIO("\n"), **{"--access-token-stdin": None})
    assert WhatsAppNumber.objects.count() == 0


def test_display_numbers_with_spaces_are_normalised():
    add_number(**{"--display-phone-number": "+49 30 123-456"})
    assert WhatsAppNumber.objects.get().display_phone_number == "+4930123456"


def demo_number_config(folder):
    """The JSON the run command gives seed_demo for its demo number."""
    config = folder / "number.json"
    config.write_text(
        json.dumps(
            {
                "phone_number_id": "100000000000001",
                "display_phone_number": "+15550100001",
                "waba_id": "200000000000001",
                "access_token": "tok",
                "app_secret": "sec",
                "verify_token": "ver",
            }
        )
    )
    return config


def test_seed_demo_prints_the_password_once_and_it_logs_in(tmp_path, client):
    config = demo_number_config(tmp_path)
    first = StringIO()
    call_command("seed_demo", "--number-config", str(config), stdout=first)
    password = re.search(r"with password '([^']+)'", first.getvalue()).group(1)
    second = StringIO()
    call_command("seed_demo", "--number-config", str(config), stdout=second)
    assert password not in second.getvalue()
    assert User.objects.filter(username="demo").count() == 1
    assert WhatsAppNumber.objects.count() == 1
    response = client.post(
        "/accounts/login/", {"username": "demo", "password": password}
    )
    assert response.status_code == 302
    assert response.url == "/"
    demo = User.objects.get(username="demo")
    assert demo.teams.filter(numbers__phone_number_id="100000000000001").exists()


def test_drf_create_token_makes_an_api_token(agent):
    out = StringIO()
    call_command("drf_create_token", agent.username, stdout=out)
    token = Token.objects.get(user=agent)
    assert token.key in out.getvalue()


def test_seed_demo_gives_menus_a_rate_card_and_a_second_team(tmp_path):
    config = demo_number_config(tmp_path)
    out = StringIO()
    call_command("seed_demo", "--number-config", str(config), stdout=out)
    call_command("seed_demo", "--number-config", str(config), stdout=StringIO())
    assert set(Label.objects.values_list("name", flat=True)) >= {"VIP", "Refund"}
    assert RateCard.objects.filter(market="49", category="marketing").count() == 1
    # Every seeded canned reply passes the admin's placeholder check.
    for response in CannedResponse.objects.all():
        response.full_clean()
    sam = User.objects.get(username="sam")
    assert "'sam' with password" in out.getvalue()
    assert not sam.is_staff
    assert list(sam.teams.values_list("name", flat=True)) == ["Billing"]
    number = WhatsAppNumber.objects.get()
    assert set(number.teams.values_list("name", flat=True)) == {"Support", "Billing"}
    # Team scoping shows: the billing reply is Sam's team's alone.
    refund = CannedResponse.objects.get(shortcut="refund-policy")
    assert refund.team.name == "Billing"
