import getpass
import os
import re
import sys

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


# Each secret: its option, the environment variable read when the option is
# not given, what to call it. Given as options they are visible to every
# user of the machine (ps, /proc) and stay in shell history.
SECRETS = (
    ("access_token", "--access-token", "WHATSAPP_ACCESS_TOKEN", "access token"),
    ("app_secret", "--app-secret", "WHATSAPP_APP_SECRET", "app secret"),
    ("verify_token", "--verify-token", "WHATSAPP_VERIFY_TOKEN", "verify token"),
)


class Command(BaseCommand):
    help = (
        "Add a WhatsApp number and its Meta app, or update the number with this "
        "phone-number id (idempotent). The secrets come from the environment "
        "(WHATSAPP_ACCESS_TOKEN, WHATSAPP_APP_SECRET, WHATSAPP_VERIFY_TOKEN), "
        "the access token also from standard input (--access-token-stdin)."
    )
    # call_command(..., stdin=...) in tests, as Django's createsuperuser.
    stealth_options = ("stdin",)

    def add_arguments(self, parser):
        parser.add_argument("--phone-number-id", required=True)
        parser.add_argument("--display-phone-number", required=True)
        parser.add_argument("--waba-id", required=True)
        for _, option, variable, label in SECRETS:
            parser.add_argument(
                option,
                help=f"Deprecated: shows the {label} to other users in the"
                f" process list; set {variable} instead.",
            )
        parser.add_argument(
            "--access-token-stdin",
            action="store_true",
            help="Read the access token from standard input (prompted for,"
            " without echo, on a terminal).",
        )
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
        secrets = self.read_secrets(options)
        try:
            number, created = services.add_whatsapp_number(
                phone_number_id=meta_id(options["phone_number_id"]),
                display_phone_number=e164(options["display_phone_number"]),
                waba_id=meta_id(options["waba_id"]),
                **secrets,
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

    def read_secrets(self, options) -> dict[str, str]:
        """Each secret from its option (with a warning), standard input (the
        access token) or the environment, in that order."""
        if options["access_token_stdin"] and options["access_token"] is not None:
            raise CommandError("Give the access token once: option or stdin.")
        secrets = {}
        for name, option, variable, label in SECRETS:
            if options[name] is not None:
                self.stderr.write(
                    self.style.WARNING(
                        f"Warning: {option} puts the {label} in the process list"
                        f" and shell history; set {variable} instead."
                    )
                )
                secrets[name] = secret(options[name])
            elif name == "access_token" and options["access_token_stdin"]:
                secrets[name] = secret(self.read_stdin(options, label))
            elif os.environ.get(variable) is not None:
                secrets[name] = secret(os.environ[variable])
            else:
                hint = " or pass --access-token-stdin" if name == "access_token" else ""
                raise CommandError(f"Set the {label} in {variable}{hint}.")
        return secrets

    def read_stdin(self, options, label: str) -> str:
        stream = options.get("stdin") or sys.stdin
        if stream.isatty():
            return getpass.getpass(f"{label.capitalize()}: ")
        return stream.readline()
