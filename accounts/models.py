import functools
import zoneinfo

from django.contrib.auth.models import AbstractUser
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone


@functools.cache
def available_time_zones() -> frozenset[str]:
    """The IANA time zone names this server knows (read once: it scans tzdata)."""
    return frozenset(zoneinfo.available_timezones())


def validate_time_zone(value: str) -> None:
    if value not in available_time_zones():
        raise ValidationError(
            "Unknown time zone %(value)s: give an IANA name such as Europe/Berlin.",
            code="invalid_time_zone",
            params={"value": value},
        )


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
    # The agent's IANA time zone: pages show times in it and read the times
    # the agent types (a snooze) in it. The workspace sets it from the
    # browser's; empty, the server's TIME_ZONE.
    time_zone = models.CharField(
        max_length=64,
        blank=True,
        validators=[validate_time_zone],
        help_text="An IANA name such as Europe/Berlin; set from the agent's "
        "browser. Empty: the server's time zone.",
    )
    # Chosen by the agent. Colleagues see it while the agent has the
    # workspace open (`connected`); an agent without an open tab is offline.
    availability = models.CharField(
        max_length=10, choices=Availability.choices, default=Availability.ONLINE
    )
    availability_changed_at = models.DateTimeField(null=True, blank=True)
    # Whether the agent has the workspace open in a tab (LiveTab), kept by
    # conversations.services as tabs open and close.
    connected = models.BooleanField(default=False)
    teams = models.ManyToManyField(Team, related_name="members", blank=True)

    class Meta:
        ordering = ["username"]

    def __str__(self):
        return self.name

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        """The time zone this agent's pages show and read times in."""
        if self.time_zone in available_time_zones():
            return zoneinfo.ZoneInfo(self.time_zone)
        return timezone.get_default_timezone()

    @property
    def name(self) -> str:
        return self.display_name or self.get_full_name() or self.username

    @property
    def presence(self) -> str:
        """What colleagues see: the chosen availability while connected."""
        return self.availability if self.connected else self.Availability.OFFLINE

    def get_presence_display(self) -> str:
        return self.Availability(self.presence).label


class LiveTab(models.Model):
    """A workspace tab with its socket open: the agent is connected while
    they have one, or closed one a moment ago (opening a conversation loads
    a new page, whose socket replaces the old one). Tabs that stop saying
    they are alive (their server died without closing them) are swept."""

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="live_tabs")
    # The socket's channel name, unique to the tab.
    channel_name = models.CharField(max_length=200, unique=True)
    opened_at = models.DateTimeField(auto_now_add=True)
    seen_at = models.DateTimeField(db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True)

    def __str__(self):
        return f"{self.user} ({self.channel_name})"
