from django.contrib.auth.models import AbstractUser
from django.db import models


class Team(models.Model):
    """A group of agents; WhatsApp numbers (inboxes) are opened to teams."""

    name = models.CharField(max_length=100, unique=True)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class User(AbstractUser):
    """Everyone who logs in is an agent; staff agents are admins."""

    class Availability(models.TextChoices):
        ONLINE = "online", "Online"
        AWAY = "away", "Away"
        OFFLINE = "offline", "Offline"

    # Shown to customers' conversations and colleagues instead of the login name.
    display_name = models.CharField(max_length=150, blank=True)
    # Set by the agent; colleagues see it next to assignees, and routing can
    # prefer agents who are online.
    availability = models.CharField(
        max_length=10, choices=Availability.choices, default=Availability.OFFLINE
    )
    availability_changed_at = models.DateTimeField(null=True, blank=True)
    teams = models.ManyToManyField(Team, related_name="members", blank=True)

    class Meta:
        ordering = ["username"]

    def __str__(self):
        return self.name

    @property
    def name(self) -> str:
        return self.display_name or self.get_full_name() or self.username
