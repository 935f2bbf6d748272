import json
import secrets
from pathlib import Path

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import Team
from conversations import services

DEMO_USERNAME = "demo"
DEMO_TEAM = "Support"


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
        number.teams.add(team)

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
        self.stdout.write(f"Demo number: {number}.")
