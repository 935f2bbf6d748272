from django.apps import AppConfig


class ConversationsConfig(AppConfig):
    name = "conversations"
    verbose_name = "WhatsApp conversations"

    def ready(self):
        # Membership changes re-check agents' live streams (workspace).
        from . import signals  # noqa: F401
