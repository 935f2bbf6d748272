"""Delete processed webhook events, live events and media files past their
retention age (the settings of docs/operations.md), as beat does hourly."""

from django.core.management.base import BaseCommand

from conversations import services


class Command(BaseCommand):
    help = (
        "Delete processed webhook events, live events and media files older"
        " than their retention settings, in batches."
    )

    def handle(self, *args, **options):
        purged = services.purge_expired()
        self.stdout.write(
            f"Purged {purged.webhook_events} webhook events, "
            f"{purged.live_events} live events, {purged.media_files} media files."
        )
