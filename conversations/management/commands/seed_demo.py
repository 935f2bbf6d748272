import datetime
import json
import secrets
from decimal import Decimal
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Team
from conversations import services
from conversations.models import CannedResponse, Label, RateCard

DEMO_USERNAME = "demo"
DEMO_TEAM = "Support"
# A second agent in a second team, so a newcomer sees team views, routing
# by team and what an agent who is not an admin may see.
SECOND_USERNAME = "sam"
SECOND_TEAM = "Billing"

DEMO_LABELS = {
    "Order issue": "#b91c1c",
    "Refund": "#b45309",
    "VIP": "#6d28d9",
    "Feedback": "#047857",
}
# shortcut: (title, text, team name or None for every agent)
DEMO_CANNED = {
    "hello": (
        "Greeting",
        "Hi {{first_name}}, this is {{agent_name}} from {{number_name}}. "
        "How can I help?",
        None,
    ),
    "where-is-order": (
        "Where is my order",
        "Thanks {{first_name}}! Could you send me your order number? "
        "I will look up where your parcel is right away.",
        None,
    ),
    "refund-policy": (
        "Refund policy",
        "Refunds reach your account within 5 working days of the return "
        "arriving at our warehouse.",
        SECOND_TEAM,
    ),
    "bye": ("Closing", "Glad I could help, {{first_name}}. Have a good day!", None),
}
# Demo prices per delivered message (EUR): Germany and every other market.
DEMO_RATES = {
    ("49", "marketing"): "0.1365",
    ("49", "utility"): "0.0456",
    ("49", "authentication"): "0.0768",
    ("*", "marketing"): "0.0625",
    ("*", "utility"): "0.0200",
    ("*", "authentication"): "0.0300",
}
RATES_VALID_FROM = datetime.date(2025, 7, 1)


class Command(BaseCommand):
    help = (
        "Create the demo agent (printing its password once), a Support team and "
        "a demo WhatsApp number whose credentials are read from a JSON file."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--number-config",
            type=Path,
            required=True,
            help="JSON with phone_number_id, display_phone_number, waba_id, "
            "access_token, app_secret, verify_token and optionally app_id, name.",
        )

    @transaction.atomic
    def handle(self, *args, **options):
        try:
            config = json.loads(options["number_config"].read_text())
        except (OSError, ValueError) as error:
            raise CommandError(f"Cannot read the number config: {error}") from None

        team, _ = Team.objects.get_or_create(
            name=DEMO_TEAM, defaults={"description": "Demo support team"}
        )
        number, _ = services.add_whatsapp_number(
            phone_number_id=config["phone_number_id"],
            display_phone_number=config["display_phone_number"],
            waba_id=config["waba_id"],
            access_token=config["access_token"],
            app_secret=config["app_secret"],
            verify_token=config["verify_token"],
            name=config.get("name", "Demo support line"),
            app_id=config.get("app_id", ""),
        )
        billing, _ = Team.objects.get_or_create(
            name=SECOND_TEAM, defaults={"description": "Demo billing team"}
        )
        number.teams.add(team, billing)
        self._seed_workspace(billing)

        User = get_user_model()
        agent = User.objects.filter(username=DEMO_USERNAME).first()
        if agent is None:
            password = secrets.token_urlsafe(12)
            agent = User.objects.create_superuser(
                username=DEMO_USERNAME,
                email="",
                password=password,
                display_name="Demo Agent",
            )
            agent.teams.add(team)
            self.stdout.write(
                self.style.SUCCESS(
                    f"Demo agent created. Log in as '{DEMO_USERNAME}' with password "
                    f"'{password}' (shown only this once; change it with "
                    f"'python manage.py changepassword {DEMO_USERNAME}')."
                )
            )
        else:
            self.stdout.write(
                f"Demo agent '{DEMO_USERNAME}' exists; its password was shown when "
                f"it was created (reset it with "
                f"'python manage.py changepassword {DEMO_USERNAME}')."
            )
        self._seed_second_agent(billing)
        self.stdout.write(f"Demo number: {number}.")

    def _seed_workspace(self, billing: Team) -> None:
        """Labels, canned replies and a rate card, so those menus and the
        cost figures are not empty on the first visit (kept if edited)."""
        for name, color in DEMO_LABELS.items():
            Label.objects.get_or_create(name=name, defaults={"color": color})
        for shortcut, (title, text, team_name) in DEMO_CANNED.items():
            CannedResponse.objects.get_or_create(
                shortcut=shortcut,
                defaults={
                    "title": title,
                    "text": text,
                    "team": billing if team_name == SECOND_TEAM else None,
                },
            )
        for (market, category), price in DEMO_RATES.items():
            RateCard.objects.get_or_create(
                market=market,
                category=category,
                valid_from=RATES_VALID_FROM,
                defaults={"price": Decimal(price), "currency": "EUR"},
            )

    def _seed_second_agent(self, billing: Team) -> None:
        User = get_user_model()
        if User.objects.filter(username=SECOND_USERNAME).exists():
            return
        password = secrets.token_urlsafe(12)
        agent = User.objects.create_user(
            username=SECOND_USERNAME, password=password, display_name="Sam Billing"
        )
        agent.teams.add(billing)
        self.stdout.write(
            f"Second agent (team {SECOND_TEAM}, not an admin): '{SECOND_USERNAME}' "
            f"with password '{password}' (shown only this once)."
        )
