"""Mirror the message templates of every WABA (or one number's) from Meta."""

from django.core.management.base import BaseCommand, CommandError

from conversations import services
from conversations.models import WhatsAppNumber


class Command(BaseCommand):
    help = "Sync message templates from Meta (GET /{waba-id}/message_templates)."

    def add_arguments(self, parser):
        parser.add_argument("--phone-number-id", default="")

    def handle(self, *args, phone_number_id: str, **options):
        number = None
        if phone_number_id:
            number = WhatsAppNumber.objects.filter(
                phone_number_id=phone_number_id
            ).first()
            if number is None:
                raise CommandError(f"No number with phone-number id {phone_number_id}")
        count = services.sync_templates(number=number)
        self.stdout.write(f"Synced {count} templates.")
