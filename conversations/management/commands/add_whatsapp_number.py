import re

from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError

from conversations import services

META_ID = re.compile(r"^\d{1,64}$")
E164 = re.compile(r"^\+[1-9]\d{6,14}$")


def meta_id(value: str) -> str:
    if not META_ID.match(value):
        raise CommandError(f"{value!r} is not a Meta id (digits only).")
    return value


def e164(value: str) -> str:
    compact = re.sub(r"[\s().-]", "", value)
    if not E164.match(compact):
        raise CommandError(
            f"{value!r} is not a phone number in E.164 form, such as +4930123456."
        )
    return compact


def secret(value: str) -> str:
    if not value.strip():
        raise CommandError("Tokens and secrets cannot be empty.")
    return value.strip()


class Command(BaseCommand):
    help = (
        "Add a WhatsApp number and its Meta app, or update the number with this "
        "phone-number id (idempotent)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--phone-number-id", required=True)
        parser.add_argument("--display-phone-number", required=True)
        parser.add_argument("--waba-id", required=True)
        parser.add_argument("--access-token", required=True)
        parser.add_argument("--app-secret", required=True)
        parser.add_argument("--verify-token", required=True)
        parser.add_argument("--name", default="")
        parser.add_argument(
            "--throughput",
            type=int,
            default=80,
            help="Messages per second Meta allows this number (1-1000).",
        )
        parser.add_argument(
            "--app-id",
            default="",
            help="Meta app id; numbers with the same app id share its secrets.",
        )

    def handle(self, *args, **options):
        throughput = options["throughput"]
        if not 1 <= throughput <= 1000:
            raise CommandError("--throughput must be between 1 and 1000.")
        app_id = options["app_id"].strip()
        if app_id:
            meta_id(app_id)
        try:
            number, created = services.add_whatsapp_number(
                phone_number_id=meta_id(options["phone_number_id"]),
                display_phone_number=e164(options["display_phone_number"]),
                waba_id=meta_id(options["waba_id"]),
                access_token=secret(options["access_token"]),
                app_secret=secret(options["app_secret"]),
                verify_token=secret(options["verify_token"]),
                name=options["name"].strip(),
                throughput=throughput,
                app_id=app_id,
            )
        except ValidationError as error:
            messages = "; ".join(
                f"{field}: {' '.join(errors)}"
                for field, errors in error.message_dict.items()
            )
            raise CommandError(f"Invalid number: {messages}") from None
        verb = "Added" if created else "Updated"
        self.stdout.write(
            self.style.SUCCESS(
                f"{verb} {number.name} ({number.display_phone_number}), "
                f"phone-number id {number.phone_number_id}."
            )
        )
