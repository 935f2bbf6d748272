"""Customers, conversations and messages, and the WhatsApp plumbing they ride on.

Models hold fields, constraints and small pure properties. Every business
action lives in the services (conversations/services/, one module per area).
"""

from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import MaxValueValidator, MinValueValidator, RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from accounts.models import validate_time_zone

from .rules import canned

E164_VALIDATOR = RegexValidator(
    r"^\+[1-9]\d{6,14}$", "Enter a phone number in E.164 form, such as +4930123456."
)


# The permission to see every number's conversations (supervisors, admins);
# everyone else sees the numbers of their teams. Superusers hold every
# permission; staff status alone grants nothing here.
VIEW_ALL_NUMBERS = "conversations.view_all_numbers"


def sees_every_number(user) -> bool:
    """Whether a user may see every number's conversations, customers and teams."""
    return user.has_perm(VIEW_ALL_NUMBERS)


def mask_secret(value: str) -> str:
    """Show enough of a secret to recognise it, never enough to use it: its
    last 4 characters when they are at most a quarter of it, and a fixed
    number of dots that does not tell its length."""
    if not value:
        return ""
    if len(value) < 16:
        return "•" * 8
    return "•" * 8 + value[-4:]


class MetaApp(models.Model):
    """A Meta (Facebook) app: it signs webhooks and owns the verify token.

    Several numbers may belong to one app; several apps may post to the same
    webhook URL, each signing with its own secret.
    """

    name = models.CharField(max_length=100)
    # Meta's app id; empty for an app entered without one. Numbers given the
    # same app id share this row.
    app_id = models.CharField(max_length=64, blank=True)
    # Key of the HMAC-SHA256 in X-Hub-Signature-256. Never shown back in full.
    app_secret = models.CharField(max_length=255)
    # What Meta echoes in the GET handshake when the webhook URL is set.
    verify_token = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]
        verbose_name = "Meta app"
        constraints = [
            models.UniqueConstraint(
                fields=["app_id"], condition=~Q(app_id=""), name="unique_meta_app_id"
            )
        ]

    def __str__(self):
        return self.name or self.app_id or f"Meta app {self.pk}"

    @property
    def masked_app_secret(self) -> str:
        return mask_secret(self.app_secret)


class WhatsAppNumberQuerySet(models.QuerySet):
    def visible_to(self, user):
        """The numbers (inboxes) a user may see: all with VIEW_ALL_NUMBERS,
        else their teams'."""
        if sees_every_number(user):
            return self
        return self.filter(teams__members=user).distinct()


class WhatsAppNumber(models.Model):
    """A business phone number on the Cloud API: one inbox of the helpdesk."""

    app = models.ForeignKey(MetaApp, on_delete=models.PROTECT, related_name="numbers")
    name = models.CharField(
        max_length=100, help_text="Shown to agents, e.g. 'Support DE'"
    )
    # Meta's id for the number: the path of every send, and the routing key of
    # every webhook (metadata.phone_number_id).
    phone_number_id = models.CharField(max_length=64, unique=True)
    display_phone_number = models.CharField(max_length=20, validators=[E164_VALIDATOR])
    # The WhatsApp Business Account that owns the number and its templates.
    waba_id = models.CharField(max_length=64, db_index=True)
    # Bearer token for the Graph API (a system-user token in production).
    # Never shown back in full, never logged, never sent to a browser.
    access_token = models.TextField()
    # Messages per second Meta allows this number (80 by default, up to
    # 1,000 after Meta's upgrade); the delivery rate limiter keeps to it.
    throughput = models.PositiveIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(1000)]
    )
    # Teams whose agents may see and answer this number's conversations.
    teams = models.ManyToManyField("accounts.Team", related_name="numbers", blank=True)
    is_active = models.BooleanField(default=True)
    # Outbound: set when Meta answered an error that every further send would
    # repeat (expired token 190, locked account 131031, policy block 368,
    # billing 131042). Queued sends wait until an admin resumes the number.
    sending_paused = models.BooleanField(default=False)
    sending_paused_reason = models.TextField(blank=True)
    sending_paused_since = models.DateTimeField(null=True, blank=True)
    # From Meta's phone_number_quality_update webhooks: the latest event
    # (THROUGHPUT_UPGRADE, FLAGGED, ...), the quality rating when Meta names
    # one, and the messaging limit tier (TIER_1K, ...); empty until Meta reports.
    quality_event = models.CharField(max_length=40, blank=True)
    quality_rating = models.CharField(max_length=20, blank=True)
    messaging_limit = models.CharField(max_length=40, blank=True)
    quality_updated_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = WhatsAppNumberQuerySet.as_manager()

    class Meta:
        ordering = ["name"]
        verbose_name = "WhatsApp number"
        permissions = [
            ("view_all_numbers", "Can see every number's conversations"),
        ]

    def __str__(self):
        return f"{self.name} ({self.display_phone_number})"

    @property
    def masked_access_token(self) -> str:
        return mask_secret(self.access_token)


class CustomerQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Customers a user may see: all with VIEW_ALL_NUMBERS; others those with a
        conversation on one of their numbers, and those with none yet (e.g.
        recorded through the consent API), which belong to no team.
        """
        if sees_every_number(user):
            return self
        numbers = WhatsAppNumber.objects.visible_to(user).values("pk")
        return self.filter(
            Q(conversations__number__in=numbers) | Q(conversations__isnull=True)
        ).distinct()


class Customer(models.Model):
    """A WhatsApp contact. Customers never log in.

    WhatsApp identifies a user by wa_id (their phone number's digits) and,
    since usernames arrived, by a business-scoped user id (BSUID). Either may
    be missing from a webhook, so both are kept and matched on.
    """

    # Digits as Meta sends them, without '+'. Empty when Meta only sent a BSUID.
    wa_id = models.CharField(max_length=32, blank=True)
    # Meta's business-scoped user id (contacts[].user_id); empty for older
    # payloads. Changes when the user changes number.
    user_id = models.CharField(max_length=256, blank=True)
    phone = models.CharField(max_length=20, blank=True, validators=[E164_VALIDATOR])
    # The name from the customer's WhatsApp profile; refreshed from webhooks.
    profile_name = models.CharField(max_length=256, blank=True)
    # A name an agent typed; it wins over the profile name and webhooks never
    # overwrite it.
    name = models.CharField(max_length=256, blank=True)
    username = models.CharField(max_length=256, blank=True)
    country_code = models.CharField(max_length=4, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = CustomerQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(
                condition=~Q(wa_id="") | ~Q(user_id=""),
                name="customer_has_wa_id_or_user_id",
                violation_error_message="A customer needs a wa_id or a user id.",
            ),
            models.UniqueConstraint(
                fields=["wa_id"], condition=~Q(wa_id=""), name="unique_customer_wa_id"
            ),
            models.UniqueConstraint(
                fields=["user_id"],
                condition=~Q(user_id=""),
                name="unique_customer_user_id",
            ),
        ]
        indexes = [models.Index(fields=["phone"], name="customer_phone")]

    def __str__(self):
        return self.display_name

    @property
    def display_name(self) -> str:
        return (
            self.name
            or self.profile_name
            or self.username
            or self.phone
            or self.wa_id
            or self.user_id
        )


class ConsentRecord(models.Model):
    """One opt-in or opt-out, kept forever: the ledger is the customer's history.

    The newest by `occurred_at` decides; a record heard of late (a delayed or
    replayed webhook) joins the history in its place and decides nothing.
    """

    class Purpose(models.TextChoices):
        MARKETING = "marketing", "Marketing"
        UTILITY = "utility", "Utility (order and travel updates)"

    class Status(models.TextChoices):
        OPT_IN = "opt_in", "Opted in"
        OPT_OUT = "opt_out", "Opted out"

    class Source(models.TextChoices):
        WEB_FORM = "web_form", "Web form"
        CHECKOUT = "checkout", "Checkout"
        AGENT = "agent", "Agent"
        API = "api", "API"
        WHATSAPP = "whatsapp", "WhatsApp message"
        META_ERROR = "meta_error", "Meta error 131050"

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="consents"
    )
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    status = models.CharField(max_length=10, choices=Status.choices)
    source = models.CharField(max_length=20, choices=Source.choices)
    # What the customer agreed to, word for word (proof of opt-in).
    wording = models.TextField(blank=True)
    # When the helpdesk recorded it.
    recorded_at = models.DateTimeField(auto_now_add=True)
    # When the customer gave it: Meta's time for a change made in WhatsApp's
    # settings (the user_preferences webhook), else when it was recorded.
    occurred_at = models.DateTimeField(default=timezone.now)
    # The webhook event it came from (user_preferences: its category, value
    # and time), so the same event received or processed again adds nothing;
    # empty for records made here.
    event_key = models.CharField(max_length=255, blank=True)
    # The agent or API user who recorded it; empty when it came from the
    # customer's own WhatsApp message or from Meta.
    recorded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        ordering = ["-occurred_at", "-id"]
        permissions = [
            ("record_consent", "Can record customers' consent through the API"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["customer", "event_key"],
                condition=~Q(event_key=""),
                name="unique_consent_event",
            )
        ]
        indexes = [
            models.Index(
                fields=["customer", "purpose", "-occurred_at"],
                name="consent_current_per_purpose",
            )
        ]

    def __str__(self):
        return f"{self.customer}: {self.purpose} {self.status}"


class Label(models.Model):
    name = models.CharField(max_length=50, unique=True)
    color = models.CharField(
        max_length=7,
        default="#6b7280",
        validators=[RegexValidator(r"^#[0-9a-fA-F]{6}$", "Use a colour like #1f2937.")],
    )

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class ConversationQuerySet(models.QuerySet):
    def visible_to(self, user):
        """Conversations of the numbers a user may see (WhatsAppNumber.visible_to)."""
        if sees_every_number(user):
            return self
        # A semi-join (EXISTS), not a join and DISTINCT: the conversation's
        # row is read once however many of the user's teams share its number.
        return self.filter(
            models.Exists(
                WhatsAppNumber.teams.through.objects.filter(
                    whatsappnumber_id=models.OuterRef("number_id"),
                    team__members=user,
                )
            )
        )

    def unresolved(self):
        return self.exclude(status=Conversation.Status.RESOLVED)

    def for_inbox(self):
        return self.select_related(
            "customer", "number", "assignee", "team", "last_message", "service_level"
        )


class Conversation(models.Model):
    """A thread between one customer and one business number, until resolved."""

    class Status(models.TextChoices):
        OPEN = "open", "Open"
        PENDING = "pending", "Pending"
        SNOOZED = "snoozed", "Snoozed"
        RESOLVED = "resolved", "Resolved"

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="conversations"
    )
    number = models.ForeignKey(
        WhatsAppNumber, on_delete=models.PROTECT, related_name="conversations"
    )
    status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.OPEN
    )
    snoozed_until = models.DateTimeField(null=True, blank=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="assigned_conversations",
    )
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="conversations",
    )
    labels = models.ManyToManyField(Label, related_name="conversations", blank=True)
    # Time of the customer's latest message: the 24-hour customer service
    # window runs from here.
    last_inbound_at = models.DateTimeField(null=True, blank=True)
    # Denormalised so the inbox is two index scans, not a subquery per row.
    last_message_at = models.DateTimeField(null=True, blank=True)
    last_message = models.ForeignKey(
        "Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Customer messages no agent has seen yet.
    unread_count = models.PositiveIntegerField(default=0)
    # The click-to-WhatsApp ad (or post) that started the conversation, every
    # field as Meta sent it; empty for chats the customer began unprompted.
    referral = models.JSONField(null=True, blank=True)
    # Copied out of the referral for attribution reports.
    referral_source_id = models.CharField(max_length=128, blank=True, db_index=True)
    referral_ctwa_clid = models.CharField(max_length=512, blank=True)
    # The 72-hour free entry-point window, opened by the business's first
    # reply within 24 hours to an ad-started conversation.
    free_entry_point_expires_at = models.DateTimeField(null=True, blank=True)
    first_response_at = models.DateTimeField(null=True, blank=True)
    resolved_at = models.DateTimeField(null=True, blank=True)
    # A WhatsApp group's traffic (Groups API group_id), kept apart from the
    # one-to-one conversations of its members; its customer is whoever wrote
    # first. Empty for one-to-one conversations.
    group_id = models.CharField(max_length=256, blank=True, db_default="")
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    objects = ConversationQuerySet.as_manager()

    class Meta:
        ordering = ["-last_message_at", "-id"]
        constraints = [
            # A customer has at most one unresolved conversation per number, so
            # concurrent webhooks cannot open two.
            models.UniqueConstraint(
                fields=["customer", "number"],
                condition=~Q(status="resolved") & Q(group_id=""),
                name="one_unresolved_conversation_per_customer_and_number",
            ),
            # And a group at most one per number.
            models.UniqueConstraint(
                fields=["number", "group_id"],
                condition=~Q(status="resolved") & ~Q(group_id=""),
                name="one_unresolved_conversation_per_group_and_number",
            ),
        ]
        indexes = [
            # The inbox: newest activity first, optionally by number/status.
            models.Index(fields=["-last_message_at", "-id"], name="conv_inbox"),
            models.Index(
                fields=["number", "status", "-last_message_at"],
                name="conv_number_status",
            ),
            models.Index(
                fields=["assignee", "status", "-last_message_at"],
                name="conv_assignee_status",
            ),
            models.Index(
                fields=["team", "status", "-last_message_at"], name="conv_team_status"
            ),
            # Finding the customer's latest conversation on a number.
            models.Index(
                fields=["customer", "number", "-created_at"], name="conv_customer"
            ),
            # The workspace's "window closing soonest" ordering.
            models.Index(fields=["last_inbound_at", "id"], name="conv_window"),
        ]

    def __str__(self):
        return f"#{self.pk} {self.customer} on {self.number.name}"


class MessageTemplate(models.Model):
    """A message template of a WABA, as last synced from Meta."""

    class Category(models.TextChoices):
        MARKETING = "MARKETING", "Marketing"
        UTILITY = "UTILITY", "Utility"
        AUTHENTICATION = "AUTHENTICATION", "Authentication"

    class Status(models.TextChoices):
        APPROVED = "APPROVED", "Approved"
        PENDING = "PENDING", "Pending"
        REJECTED = "REJECTED", "Rejected"
        PAUSED = "PAUSED", "Paused"
        DISABLED = "DISABLED", "Disabled"
        IN_APPEAL = "IN_APPEAL", "In appeal"
        PENDING_DELETION = "PENDING_DELETION", "Pending deletion"
        DELETED = "DELETED", "Deleted"
        LIMIT_EXCEEDED = "LIMIT_EXCEEDED", "Limit exceeded"

    waba_id = models.CharField(max_length=64)
    # Meta's template id (message_template_id in status webhooks).
    template_id = models.CharField(max_length=64, blank=True, db_index=True)
    name = models.CharField(max_length=512)
    language = models.CharField(max_length=15)
    category = models.CharField(max_length=20, choices=Category.choices)
    status = models.CharField(max_length=20, choices=Status.choices)
    # Header, body, footer and buttons exactly as Meta describes them; the
    # parameters a send needs are read from here.
    components = models.JSONField(default=list, blank=True)
    # Why Meta rejected, paused or disabled it, as its webhook said.
    status_reason = models.TextField(blank=True)
    # GREEN, YELLOW, RED or UNKNOWN, from Meta's quality webhooks.
    quality_score = models.CharField(max_length=20, blank=True, db_default="")
    synced_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name", "language"]
        constraints = [
            models.UniqueConstraint(
                fields=["waba_id", "name", "language"], name="unique_template_per_waba"
            )
        ]

    def __str__(self):
        return f"{self.name} ({self.language})"


class Message(models.Model):
    """One WhatsApp message in a conversation, in either direction."""

    class Direction(models.TextChoices):
        INBOUND = "inbound", "From the customer"
        OUTBOUND = "outbound", "From the business"

    class Status(models.TextChoices):
        RECEIVED = "received", "Received"
        QUEUED = "queued", "Queued"
        SENDING = "sending", "Sending"
        # Meta may have accepted the send but never answered (a timeout, a
        # worker killed mid-request); settled by a status webhook or an agent's
        # explicit resend, never resent blindly.
        UNKNOWN = "unknown", "Unknown"
        SENT = "sent", "Sent"
        DELIVERED = "delivered", "Delivered"
        READ = "read", "Read"
        PLAYED = "played", "Played"
        FAILED = "failed", "Failed"

    class MediaState(models.TextChoices):
        NONE = "", "No media"
        PENDING = "pending", "Waiting for download"
        STORED = "stored", "Stored"
        FAILED = "failed", "Download failed"
        # Deleted after MEDIA_RETENTION_DAYS (services/retention.py).
        PURGED = "purged", "Deleted after the retention period"

    # How far a send has got; a status only ever moves to a higher rank.
    STATUS_RANK = {
        Status.QUEUED: 0,
        Status.SENDING: 1,
        Status.UNKNOWN: 2,
        Status.SENT: 3,
        Status.DELIVERED: 4,
        Status.READ: 5,
        Status.PLAYED: 6,
        # Failed is final; Meta may report it even after "sent".
        Status.FAILED: 7,
    }

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="messages"
    )
    direction = models.CharField(max_length=10, choices=Direction.choices)
    # Meta's type name: text, image, audio, video, document, sticker, location,
    # contacts, interactive, button, reaction, order, system, template,
    # unsupported, ... Unknown types are kept under their own name.
    type = models.CharField(max_length=32)
    # The text, the caption, or a readable summary (a button's title, a
    # location's name) so every message reads as something in lists.
    text = models.TextField(blank=True)
    # The type's object as Meta sent it (inbound) or as it was sent (outbound).
    payload = models.JSONField(default=dict, blank=True)
    # Meta's message id. Unique: redelivered webhooks die here. Empty (NULL)
    # for outbound messages Meta has not accepted yet.
    wamid = models.CharField(max_length=256, unique=True, null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices)
    # Meta's time for inbound messages (they are ordered by it, not by arrival);
    # creation time for outbound ones.
    timestamp = models.DateTimeField(db_index=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    failed_at = models.DateTimeField(null=True, blank=True)
    # Meta's error for a failed send or an unsupported message:
    # {"code", "title", "message", "details", "fbtrace_id"}.
    error = models.JSONField(null=True, blank=True)
    # The quoted message (context.id / context.message_id).
    reply_to = models.ForeignKey(
        "self", on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The quoted wamid as Meta gave it, kept even when that message is unknown.
    context_wamid = models.CharField(max_length=256, blank=True)
    forwarded = models.BooleanField(default=False)
    frequently_forwarded = models.BooleanField(default=False)
    # A customer's edit or deletion of this message (coexistence numbers):
    # when, and what it said before ({"text", "payload", "at", "wamid"} each).
    edited_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    edit_history = models.JSONField(default=list, blank=True, db_default=[])
    # An outbound message the business sent from the WhatsApp Business app
    # (coexistence: Meta's smb_message_echoes), not from the helpdesk.
    from_business_app = models.BooleanField(default=False, db_default=False)
    # Who wrote an inbound message of a group conversation (its members
    # differ; the conversation's customer is only the first of them).
    group_sender = models.ForeignKey(
        Customer, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    # The catalog product a "Message business" inquiry is about
    # (context.referred_product: catalog_id, product_retailer_id).
    referred_product = models.JSONField(null=True, blank=True)
    # The agent who wrote an outbound message; empty for API and system sends.
    sender = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="sent_messages",
    )
    template = models.ForeignKey(
        MessageTemplate,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="messages",
    )
    # Meta's pricing object from the status webhooks (category, type, billable).
    pricing = models.JSONField(null=True, blank=True)
    # The click-to-WhatsApp ad an inbound message came from, as Meta sent it.
    referral = models.JSONField(null=True, blank=True)
    # Media: Meta's id and what its webhook says, then what was stored.
    media_id = models.CharField(max_length=128, blank=True)
    media_mime_type = models.CharField(max_length=255, blank=True)
    media_filename = models.CharField(max_length=255, blank=True)
    media_size = models.PositiveBigIntegerField(null=True, blank=True)
    # Hex SHA-256 of the stored bytes.
    media_sha256 = models.CharField(max_length=64, blank=True)
    media_file = models.FileField(upload_to="media/%Y/%m/%d/", blank=True)
    media_state = models.CharField(
        max_length=10, choices=MediaState.choices, default=MediaState.NONE, blank=True
    )
    # Outbound delivery bookkeeping: attempts so far and when the next is due.
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["timestamp", "id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(direction="outbound") | Q(wamid__isnull=False),
                name="inbound_message_has_wamid",
            ),
        ]
        indexes = [
            # A thread in Meta's order.
            models.Index(fields=["conversation", "timestamp", "id"], name="msg_thread"),
            # The delivery sweeper: outbound sends that should have moved.
            models.Index(
                fields=["status", "next_attempt_at"],
                condition=Q(status__in=["queued", "sending"]),
                name="msg_pending_delivery",
            ),
        ]

    def __str__(self):
        return f"{self.direction} {self.type} {self.wamid or self.pk}"

    @property
    def is_inbound(self) -> bool:
        return self.direction == self.Direction.INBOUND

    def can_move_to(self, status: str) -> bool:
        """Whether a status report may replace the current one (never backwards)."""
        current = self.STATUS_RANK.get(self.status, -1)
        if self.status == self.Status.FAILED:
            return False
        return self.STATUS_RANK.get(status, -1) > current


class Reaction(models.Model):
    """An emoji on a message; each side has at most one per message."""

    message = models.ForeignKey(
        Message, on_delete=models.CASCADE, related_name="reactions"
    )
    direction = models.CharField(max_length=10, choices=Message.Direction.choices)
    # Empty once removed: the row stays as a tombstone carrying reacted_at, so
    # an older reaction redelivered after the removal cannot bring it back.
    emoji = models.CharField(max_length=32, blank=True)
    # The reaction's own wamid (the latest one when it was changed).
    wamid = models.CharField(max_length=256, blank=True)
    # Meta's time of the reaction: an older redelivery never overwrites a newer one.
    reacted_at = models.DateTimeField()
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["message", "direction"], name="one_reaction_per_side"
            )
        ]

    def __str__(self):
        return f"{self.emoji} on {self.message_id}"


class WebhookEvent(models.Model):
    """A POST from Meta, stored as received before anything else happens.

    Meta offers no way to fetch past webhooks: what is not stored is lost. The
    row is the unit of work; the queue only says "process row N".
    """

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to be processed"
        PROCESSED = "processed", "Processed"
        FAILED = "failed", "Failed (will be retried)"
        # Signed by a known app but not JSON, or not Meta's envelope.
        MALFORMED = "malformed", "Malformed"
        # For a phone number or change field the helpdesk does not handle;
        # kept for admins, never dropped.
        UNROUTABLE = "unroutable", "Unroutable"

    # The request body byte for byte: the signature covers these bytes, and
    # replaying an event must see exactly what Meta sent.
    body = models.BinaryField()
    headers = models.JSONField(default=dict)
    # The app whose secret verified the signature (unsigned posts are refused
    # and never stored).
    app = models.ForeignKey(
        MetaApp, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    signature_valid = models.BooleanField(default=True)
    state = models.CharField(
        max_length=12, choices=State.choices, default=State.PENDING
    )
    received_at = models.DateTimeField(db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    # When the sweeper may queue the event again (backoff after a failure, or
    # after it queued a pending event); empty means as soon as it is seen.
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)

    class Lane(models.IntegerChoices):
        """What the body holds, from a cheap look at ingest: workers claim
        the lowest lane first, so customers' messages never wait behind a
        storm of statuses."""

        MESSAGES = 0, "Customer messages"
        OTHER = 1, "Templates, numbers, accounts"
        STATUSES = 2, "Statuses"

    # A database default too: a row inserted without it (an older process
    # during a deploy) is claimed in the middle lane.
    lane = models.PositiveSmallIntegerField(
        choices=Lane.choices, default=Lane.OTHER, db_default=Lane.OTHER
    )

    class Meta:
        ordering = ["-received_at", "-id"]
        indexes = [
            # Workers' claims: pending events, lowest lane first, oldest first.
            models.Index(
                fields=["lane", "id"],
                condition=Q(state="pending"),
                name="webhook_claim",
            ),
            # The sweeper: events not yet processed, oldest first.
            models.Index(
                fields=["received_at"],
                condition=Q(state__in=["pending", "failed"]),
                name="webhook_unprocessed",
            ),
            models.Index(fields=["state", "-received_at"], name="webhook_state"),
        ]

    def __str__(self):
        return f"Webhook event {self.pk} ({self.state})"


class LiveEvent(models.Model):
    """A change agents' browsers must see, stored so a reconnecting tab catches up.

    The id is the sequence number: a tab remembers the last id it applied and
    asks for everything after it. Written in the transaction of the change it
    announces, so an event exists exactly when its change does.
    """

    # The stream is the inbox (number): who may see an event follows from who
    # may see the number.
    number = models.ForeignKey(
        WhatsAppNumber, on_delete=models.CASCADE, related_name="live_events"
    )
    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="live_events",
    )
    # One of conversations.realtime.EVENT_TYPES.
    type = models.CharField(max_length=40)
    # Ids and small facts only; consumers load and render what they show.
    data = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # The event's place in its inbox's stream: 1, 2, 3... without gaps, in
    # commit order (LiveStream), so a tab that got n+2 but not n+1 knows
    # exactly what it lacks. The id alone cannot say: ids are shared by all
    # inboxes, skip on rollback and become visible out of order.
    sequence = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["number", "id"], name="live_event_stream")]
        constraints = [
            models.UniqueConstraint(
                fields=["number", "sequence"], name="live_event_sequence"
            )
        ]

    def __str__(self):
        return f"{self.type} #{self.pk}"


class ParkedStatus(models.Model):
    """A status report for a wamid the helpdesk has not stored (yet).

    Meta's status can beat the commit of our own send's response, or belong
    to a send made elsewhere (WhatsApp Manager, another app). It waits here
    and is applied when a message with that wamid is recorded.
    """

    wamid = models.CharField(max_length=256)
    status = models.CharField(max_length=20)
    # Meta's time of the status.
    timestamp = models.DateTimeField()
    # The first error (failed) and the pricing object, in Message's shapes.
    error = models.JSONField(null=True, blank=True)
    pricing = models.JSONField(null=True, blank=True)
    # The statuses[] item as Meta sent it.
    raw = models.JSONField(default=dict, blank=True)
    number = models.ForeignKey(
        WhatsAppNumber,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="+",
    )
    received = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-received", "-id"]
        verbose_name_plural = "parked statuses"
        constraints = [
            # A redelivered status parks once.
            models.UniqueConstraint(
                fields=["wamid", "status"], name="unique_parked_status"
            )
        ]

    def __str__(self):
        return f"{self.status} for {self.wamid}"


class AccountNotice(models.Model):
    """Something Meta said about an account, a number or a template.

    Account updates (violations, bans), account-level errors, quality and
    template-quality changes: recorded for admins, who see them in the admin.
    """

    # Meta's change field (account_update, phone_number_quality_update,
    # message_template_quality_update, errors, ...).
    kind = models.CharField(max_length=60)
    # Meta's event name or error code, e.g. DISABLED_UPDATE or 130429.
    event = models.CharField(max_length=60, blank=True)
    waba_id = models.CharField(max_length=64, blank=True, db_index=True)
    number = models.ForeignKey(
        WhatsAppNumber,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="notices",
    )
    # A readable one-liner for the admin list.
    summary = models.TextField(blank=True)
    # The change value or error object as Meta sent it.
    raw = models.JSONField(default=dict, blank=True)
    # Meta's time of the event (entry.time), else when it was received.
    occurred_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-occurred_at", "-id"]

    def __str__(self):
        return f"{self.kind} {self.event}".strip()


# --- Agent workspace ------------------------------------------------------------


class Note(models.Model):
    """A private note agents leave on a conversation; never sent to WhatsApp."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="notes"
    )
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    body = models.TextField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]
        indexes = [
            models.Index(fields=["conversation", "created_at"], name="note_thread")
        ]

    def __str__(self):
        return f"Note {self.pk} on #{self.conversation_id}"


def validate_canned_text(text: str) -> None:
    """A canned reply names only placeholders the composer fills in."""
    unknown = canned.unknown_placeholders(text)
    if unknown:
        names = ", ".join(f"{{{{{name}}}}}" for name in unknown)
        plural = "s" if len(unknown) > 1 else ""
        raise ValidationError(
            f"Unknown placeholder{plural} {names}: the composer fills in only "
            f"{canned.placeholders_help()}.",
            code="unknown_placeholder",
        )


class CannedResponse(models.Model):
    """A prepared answer agents insert into the composer (typing "/" and its
    shortcut, or from the list). Its placeholders (rules/canned.py) are
    filled in for the open conversation; unknown ones are refused."""

    shortcut = models.SlugField(
        max_length=50, unique=True, help_text="Typed after '/' in the composer"
    )
    title = models.CharField(max_length=100)
    text = models.TextField(
        help_text="Placeholders: " + canned.placeholders_help(),
        validators=[validate_canned_text],
    )
    # Empty: every agent sees it; else only the team's agents (and those
    # who see every number).
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="canned_responses",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["shortcut"]

    def __str__(self):
        return f"/{self.shortcut}"


# --- Business: notifications, delivery callbacks and rate cards --------------------
# The business's own systems send template notifications through the API (or
# an admin's CSV upload); their statuses go back to the business as signed
# callbacks; every priced message is costed from a rate card kept by admins.


class NotificationBatch(models.Model):
    """Notifications sent together: one bulk API call or one CSV upload."""

    class Source(models.TextChoices):
        API = "api", "API"
        CSV = "csv", "CSV upload"

    name = models.CharField(max_length=200, blank=True)
    source = models.CharField(max_length=10, choices=Source.choices)
    template = models.ForeignKey(
        MessageTemplate,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    # Counted when the batch was accepted; delivery progress is read from
    # its notifications' messages.
    total = models.PositiveIntegerField(default=0)
    queued = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "notification batches"

    def __str__(self):
        return self.name or f"Batch {self.pk}"


class Notification(models.Model):
    """A template message the business's systems asked for, and its fate.

    A refused notification (no consent, a bad number) is kept with its error,
    so a bulk send answers one row per recipient. An accepted one points at
    its outbound message, whose status it mirrors.
    """

    class Purpose(models.TextChoices):
        MARKETING = "marketing", "Marketing"
        UTILITY = "utility", "Utility"

    class State(models.TextChoices):
        QUEUED = "queued", "Accepted (its message carries the status)"
        REFUSED = "refused", "Refused before sending"

    # The number as the business gave it (kept even when it was invalid);
    # empty when the business named the customer by user_id instead.
    to = models.CharField(max_length=64, blank=True)
    # The business-scoped user id the business gave in place of `to`.
    user_id = models.CharField(max_length=256, blank=True, db_default="")
    customer = models.ForeignKey(
        Customer,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
    )
    number = models.ForeignKey(
        WhatsAppNumber,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
    )
    purpose = models.CharField(max_length=20, choices=Purpose.choices)
    template = models.ForeignKey(
        MessageTemplate,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="notifications",
    )
    template_name = models.CharField(max_length=512)
    template_language = models.CharField(max_length=15)
    # What the business sent: header, body, buttons, and the document.
    parameters = models.JSONField(default=dict, blank=True)
    # The business's own key (an order or booking number) shown to agents.
    reference = models.CharField(max_length=200, blank=True, db_index=True)
    # The team that handles the customer's reply.
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    state = models.CharField(max_length=10, choices=State.choices)
    # Why it was refused: {"code", "detail"}.
    error = models.JSONField(null=True, blank=True)
    message = models.OneToOneField(
        "Message",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="notification",
    )
    conversation = models.ForeignKey(
        Conversation,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="notifications",
    )
    # Idempotency-Key header and the SHA-256 of the request body; a bulk
    # request's rows share both and differ by position.
    idempotency_key = models.CharField(max_length=255, blank=True)
    request_hash = models.CharField(max_length=64, blank=True)
    position = models.PositiveIntegerField(default=0)
    batch = models.ForeignKey(
        NotificationBatch,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="notifications",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        permissions = [
            ("send_notification", "Can send notifications through the API"),
            ("view_reports", "Can see the reports page"),
        ]
        constraints = [
            # A retried request (same key, same sender) cannot insert twice,
            # even when both copies arrive at once.
            models.UniqueConstraint(
                fields=["created_by", "idempotency_key", "position"],
                condition=~Q(idempotency_key=""),
                name="unique_notification_idempotency_key",
            )
        ]
        indexes = [
            models.Index(fields=["batch", "position"], name="notification_batch"),
        ]

    def __str__(self):
        return f"Notification {self.pk} to {self.to}"


class CallbackEndpoint(models.Model):
    """A URL of the business's that hears about its notifications' statuses."""

    name = models.CharField(max_length=100)
    url = models.URLField(max_length=500)
    # Key of the HMAC-SHA256 signature; never shown back in full.
    secret = models.CharField(max_length=255)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name

    @property
    def masked_secret(self) -> str:
        return mask_secret(self.secret)


class CallbackDelivery(models.Model):
    """One status change owed to one endpoint: the outbox row and its log."""

    class State(models.TextChoices):
        PENDING = "pending", "Waiting to be sent"
        DELIVERED = "delivered", "Delivered"
        # Out of attempts; an admin may send it again.
        FAILED = "failed", "Gave up"

    endpoint = models.ForeignKey(
        CallbackEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    notification = models.ForeignKey(
        Notification, on_delete=models.CASCADE, related_name="callbacks"
    )
    # The notification status it reports: sent, delivered, read or failed.
    event = models.CharField(max_length=20)
    # The JSON body, fixed when the change happened.
    payload = models.JSONField(default=dict)
    state = models.CharField(
        max_length=10, choices=State.choices, default=State.PENDING
    )
    attempts = models.PositiveSmallIntegerField(default=0)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "callback deliveries"
        constraints = [
            # A redelivered status webhook owes the business nothing new.
            models.UniqueConstraint(
                fields=["endpoint", "notification", "event"],
                name="one_callback_per_event",
            )
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(state="pending"),
                name="callback_due",
            )
        ]

    def __str__(self):
        return f"{self.event} of notification {self.notification_id} to {self.endpoint}"


class RateCard(models.Model):
    """What Meta charges per delivered message of a category in a market.

    Meta prices by the recipient's country calling code; "*" is the rate for
    every other market. A new price is a new row from its valid_from date, so
    past messages keep the price of their day.
    """

    market = models.CharField(
        max_length=4,
        validators=[RegexValidator(r"^(\*|[1-9]\d{0,3})$", "A calling code or *.")],
        help_text="Country calling code without '+', e.g. 49, or * for the rest",
    )
    # Meta's pricing category as its webhooks name it (marketing, utility,
    # authentication, authentication-international, marketing_lite, service,
    # referral_conversion).
    category = models.CharField(max_length=40)
    currency = models.CharField(max_length=3, default="EUR")
    price = models.DecimalField(max_digits=10, decimal_places=4)
    valid_from = models.DateField()

    class Meta:
        ordering = ["market", "category", "-valid_from"]
        constraints = [
            models.UniqueConstraint(
                fields=["market", "category", "valid_from"], name="unique_rate"
            )
        ]

    def __str__(self):
        return f"{self.market} {self.category} {self.price} {self.currency}"


class MessageCharge(models.Model):
    """Meta's pricing of one outbound message, priced with the rate card.

    Meta charges a message when it is delivered and its pricing type is
    "regular"; free ones (service window, free entry point) are kept at 0
    so reports can count them too.
    """

    message = models.OneToOneField(
        "Message", on_delete=models.CASCADE, related_name="charge"
    )
    # Denormalised for reports that group by them without joining messages.
    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="charges"
    )
    category = models.CharField(max_length=40)
    pricing_type = models.CharField(max_length=40, blank=True)
    billable = models.BooleanField(default=False)
    market = models.CharField(max_length=4, blank=True)
    # Empty when no rate matched (an admin has not entered one yet).
    price = models.DecimalField(max_digits=10, decimal_places=4, null=True)
    currency = models.CharField(max_length=3, blank=True)
    # When the message was delivered (Meta charges then); empty before.
    billed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    priced_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["conversation", "billable"], name="charge_conv"),
        ]

    def __str__(self):
        return f"{self.category} {self.price} {self.currency}"


# --- Routing: auto-assignment -----------------------------------------------------


class TeamRouting(models.Model):
    """How a team's waiting conversations reach its agents.

    A conversation without a team is routed by the first team (by name) of
    its number whose routing is on, and joins that team.
    """

    class Mode(models.TextChoices):
        OFF = "off", "Off (agents pick conversations themselves)"
        ROUND_ROBIN = "round_robin", "Round robin"
        LEAST_BUSY = "least_busy", "Least busy"

    team = models.OneToOneField(
        "accounts.Team", on_delete=models.CASCADE, related_name="routing"
    )
    mode = models.CharField(max_length=20, choices=Mode.choices, default=Mode.OFF)
    # Open and pending conversations an agent holds before auto-assignment
    # passes them over, unless the agent has a capacity of their own.
    capacity = models.PositiveIntegerField(
        default=10, validators=[MinValueValidator(1), MaxValueValidator(10_000)]
    )
    # An agent offline (no tab, or away) this long gives their auto-assigned
    # conversations that still wait for an answer back to the team.
    offline_grace_minutes = models.PositiveIntegerField(
        default=15, validators=[MaxValueValidator(24 * 60)]
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name = "team routing"
        verbose_name_plural = "team routing"

    def __str__(self):
        return f"{self.team}: {self.get_mode_display()}"


class AgentRouting(models.Model):
    """An agent's place in auto-assignment: capacity, exclusion, turn."""

    agent = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="routing"
    )
    # Empty: the capacity of the team whose conversation it is.
    capacity = models.PositiveIntegerField(
        null=True,
        blank=True,
        validators=[MinValueValidator(1), MaxValueValidator(10_000)],
        help_text="Open and pending conversations at most; empty: the team's.",
    )
    # Excluded agents are never auto-assigned (they still take conversations
    # by hand).
    excluded = models.BooleanField(
        default=False, help_text="Never give this agent conversations automatically."
    )
    # Round robin: the agent whose last turn is oldest goes next. A counter,
    # not a time, so turns handed out in one batch keep their order.
    last_turn = models.PositiveBigIntegerField(default=0)
    last_assigned_at = models.DateTimeField(null=True, blank=True)
    # When the give-back sweep first saw the agent not online (no tab open,
    # or away); empty while they are online.
    offline_since = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "agent routing"
        verbose_name_plural = "agent routing"

    def __str__(self):
        return str(self.agent)


class ConversationRouting(models.Model):
    """What auto-assignment did with one conversation."""

    conversation = models.OneToOneField(
        Conversation,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="routing",
    )
    # The agent auto-assignment gave it to last; a conversation is given
    # back only while that agent still holds it.
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    assigned_at = models.DateTimeField(null=True, blank=True)
    # A person assigned (or unassigned) it: auto-assignment leaves it alone.
    manual = models.BooleanField(default=False)
    given_back_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["assigned_to"], name="conv_routing_agent"),
        ]

    def __str__(self):
        return f"Routing of conversation {self.conversation_id}"


# --- Routing: business hours ------------------------------------------------------


class BusinessHours(models.Model):
    """When a team, or a number, is open: weekly hours in a time zone, with
    holidays. A conversation follows its team's hours, else its number's;
    without either it is always open.

    The away message goes to a customer who writes while it is closed, once
    per conversation per closed period, inside the customer service window
    and never to a customer who opted out.
    """

    name = models.CharField(max_length=100)
    time_zone = models.CharField(
        max_length=64,
        validators=[validate_time_zone],
        help_text="An IANA name such as Europe/Berlin.",
    )
    team = models.OneToOneField(
        "accounts.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="business_hours",
    )
    number = models.OneToOneField(
        WhatsAppNumber,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="business_hours",
    )
    # Empty: no away reply.
    away_message = models.TextField(
        blank=True,
        max_length=4096,
        help_text="Sent once per conversation while closed; empty sends nothing.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "business hours"
        constraints = [
            models.CheckConstraint(
                condition=Q(team__isnull=True, number__isnull=False)
                | Q(team__isnull=False, number__isnull=True),
                name="business_hours_for_team_or_number",
            )
        ]

    def __str__(self):
        return self.name


class OpeningHours(models.Model):
    """One open interval of a weekday, in the schedule's local time."""

    class Weekday(models.IntegerChoices):
        MONDAY = 0, "Monday"
        TUESDAY = 1, "Tuesday"
        WEDNESDAY = 2, "Wednesday"
        THURSDAY = 3, "Thursday"
        FRIDAY = 4, "Friday"
        SATURDAY = 5, "Saturday"
        SUNDAY = 6, "Sunday"

    schedule = models.ForeignKey(
        BusinessHours, on_delete=models.CASCADE, related_name="opening_hours"
    )
    weekday = models.PositiveSmallIntegerField(choices=Weekday.choices)
    opens = models.TimeField()
    # 00:00: midnight at the end of the day.
    closes = models.TimeField(help_text="00:00 means midnight at the end of the day.")

    class Meta:
        ordering = ["weekday", "opens"]
        verbose_name_plural = "opening hours"

    def __str__(self):
        return f"{self.get_weekday_display()} {self.opens:%H:%M}–{self.closes:%H:%M}"


class Holiday(models.Model):
    """A local day the schedule is closed all day."""

    schedule = models.ForeignKey(
        BusinessHours, on_delete=models.CASCADE, related_name="holidays"
    )
    date = models.DateField()
    name = models.CharField(max_length=100, blank=True)

    class Meta:
        ordering = ["date"]
        constraints = [
            models.UniqueConstraint(
                fields=["schedule", "date"], name="one_holiday_per_schedule_and_day"
            )
        ]

    def __str__(self):
        return f"{self.date} {self.name}".strip()


class AutomaticMessage(models.Model):
    """A message the helpdesk sent on its own (no agent), and why: shown as
    an automatic message in the thread."""

    class Kind(models.TextChoices):
        AWAY = "away", "Away reply"
        CSAT = "csat", "Satisfaction survey"

    message = models.OneToOneField(
        Message, on_delete=models.CASCADE, related_name="automatic"
    )
    kind = models.CharField(max_length=10, choices=Kind.choices)

    def __str__(self):
        return f"{self.get_kind_display()} {self.message_id}"


class AwayReply(models.Model):
    """The away reply a conversation got in one closed period: at most one
    (the constraint holds even for concurrent sweeps)."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="away_replies"
    )
    # When the closed period began (the last closing time).
    closed_since = models.DateTimeField()
    message = models.OneToOneField(
        Message, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    sent_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        verbose_name_plural = "away replies"
        constraints = [
            models.UniqueConstraint(
                fields=["conversation", "closed_since"],
                name="one_away_reply_per_closed_period",
            )
        ]

    def __str__(self):
        return f"Away reply to conversation {self.conversation_id}"


# --- Routing: service levels ------------------------------------------------------


class ServicePolicy(models.Model):
    """Promised response and resolution times for a team's or a label's
    conversations, counted in the conversation's business hours or around
    the clock. A label's policy wins over a team's (the first by name)."""

    name = models.CharField(max_length=100)
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="service_policies",
    )
    label = models.ForeignKey(
        Label,
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="service_policies",
    )
    # Empty: no promise for that step.
    first_response_minutes = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    next_response_minutes = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    resolution_minutes = models.PositiveIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1)]
    )
    business_hours_only = models.BooleanField(
        default=True,
        help_text="Count only open hours of the conversation's business hours.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "service policies"
        ordering = ["name"]
        constraints = [
            models.CheckConstraint(
                condition=Q(team__isnull=True, label__isnull=False)
                | Q(team__isnull=False, label__isnull=True),
                name="service_policy_for_team_or_label",
            )
        ]

    def __str__(self):
        return self.name


class ServiceLevel(models.Model):
    """Where a conversation stands against its policy: each step's due time
    and whether it was met, the earliest pending due time, and whether the
    customer service window closes before it (escalated: after the window
    only a paid template reaches the customer)."""

    conversation = models.OneToOneField(
        Conversation,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="service_level",
    )
    policy = models.ForeignKey(
        ServicePolicy, on_delete=models.SET_NULL, null=True, related_name="+"
    )
    first_response_due_at = models.DateTimeField(null=True, blank=True)
    # Empty while pending (or without a promise).
    first_response_met = models.BooleanField(null=True)
    # The pending next response's due time (the customer wrote after a reply).
    next_response_due_at = models.DateTimeField(null=True, blank=True)
    next_responses_met = models.PositiveIntegerField(default=0)
    next_responses_missed = models.PositiveIntegerField(default=0)
    resolution_due_at = models.DateTimeField(null=True, blank=True)
    resolution_met = models.BooleanField(null=True)
    # The earliest due time still pending; empty when nothing is owed.
    due_at = models.DateTimeField(null=True, blank=True)
    window_closes_at = models.DateTimeField(null=True, blank=True)
    escalated = models.BooleanField(default=False)
    # The real deadline, what the inbox sorts by: the window's close when
    # escalated (it comes before the step's due time), else due_at.
    attention_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [
            models.Index(fields=["attention_at", "conversation"], name="service_due")
        ]

    def __str__(self):
        return f"Service level of conversation {self.conversation_id}"

    @property
    def overdue(self) -> bool:
        return self.due_at is not None and self.due_at <= timezone.now()


# --- Routing: customer satisfaction -----------------------------------------------


class SatisfactionSurvey(models.Model):
    """A team's satisfaction survey: after a conversation is resolved, a
    WhatsApp list (1 to 5) inside the customer service window."""

    team = models.OneToOneField(
        "accounts.Team", on_delete=models.CASCADE, related_name="satisfaction_survey"
    )
    enabled = models.BooleanField(default=True)
    # The list message's body (Meta: up to 4096; kept to 1024).
    question = models.CharField(
        max_length=1024,
        default="How did we do? Please rate the help you got.",
    )
    # The list's button (Meta: up to 20 characters).
    button = models.CharField(max_length=20, default="Rate us")
    # Sent after a rating; empty sends nothing. A text the customer writes
    # within COMMENT_MINUTES of rating is kept as the rating's comment.
    thanks = models.CharField(
        max_length=1024,
        blank=True,
        default="Thank you! If you like, write a comment here.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self):
        return f"Satisfaction survey of {self.team}"


class SatisfactionRating(models.Model):
    """One survey sent after a resolution, and the customer's answer."""

    conversation = models.ForeignKey(
        Conversation, on_delete=models.CASCADE, related_name="satisfaction_ratings"
    )
    # The survey message (its wamid is what the customer's answer quotes).
    message = models.OneToOneField(Message, on_delete=models.CASCADE, related_name="+")
    # Who the rating is about: the conversation's agent and team when sent.
    agent = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
    )
    sent_at = models.DateTimeField(auto_now_add=True)
    score = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MinValueValidator(1), MaxValueValidator(5)]
    )
    answered_at = models.DateTimeField(null=True, blank=True, db_index=True)
    comment = models.TextField(blank=True)
    commented_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["conversation", "-sent_at"], name="csat_conversation")
        ]

    def __str__(self):
        return f"Rating of conversation {self.conversation_id}: {self.score or '–'}"


# --- Routing: macros ---------------------------------------------------------------


class Macro(models.Model):
    """A named set of actions an agent runs on a conversation with one click:
    move it to a team, add labels, send a canned reply, resolve it."""

    name = models.CharField(max_length=100)
    # Offered on the conversations of this team; empty: on every conversation.
    team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.CASCADE,
        null=True,
        blank=True,
        related_name="macros",
        help_text="Offered on this team's conversations; empty: on all.",
    )
    set_team = models.ForeignKey(
        "accounts.Team",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Give the conversation to this team.",
    )
    add_labels = models.ManyToManyField(Label, blank=True, related_name="+")
    reply = models.ForeignKey(
        CannedResponse,
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="+",
        help_text="Send this canned response (inside the reply window only).",
    )
    resolve = models.BooleanField(default=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self):
        return self.name


class CustomerMerge(models.Model):
    """Two customers found to be one person, kept as one: a webhook named a
    wa_id held by one and a BSUID held by the other. The absorbed customer's
    conversations, consent records and notifications now belong to the
    survivor; this row remembers who it was."""

    survivor = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="merges"
    )
    absorbed_customer_id = models.BigIntegerField()
    absorbed_wa_id = models.CharField(max_length=32, blank=True)
    absorbed_user_id = models.CharField(max_length=256, blank=True)
    absorbed_name = models.CharField(max_length=256, blank=True)
    conversations_moved = models.PositiveIntegerField(default=0)
    merged_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-merged_at", "-id"]

    def __str__(self):
        return f"customer {self.absorbed_customer_id} into {self.survivor_id}"


class CustomerIdentityChange(models.Model):
    """A phone number or BSUID a customer had before Meta's system message
    (`user_changed_number`, `user_changed_user_id`) re-keyed them."""

    class Kind(models.TextChoices):
        NUMBER = "user_changed_number", "Changed phone number"
        USER_ID = "user_changed_user_id", "Changed business-scoped user id"

    customer = models.ForeignKey(
        Customer, on_delete=models.CASCADE, related_name="identity_changes"
    )
    kind = models.CharField(max_length=32, choices=Kind.choices)
    old_value = models.CharField(max_length=256, blank=True)
    new_value = models.CharField(max_length=256)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-changed_at", "-id"]

    def __str__(self):
        return f"{self.customer_id} {self.kind}: {self.old_value} -> {self.new_value}"


class LiveStream(models.Model):
    """An inbox's live-event counter: the last sequence number it gave out.

    Taking numbers locks the row until the transaction ends, so numbers of
    one inbox are given out in commit order and a rolled-back one is given
    again: whoever sees n committed may rely on 1..n-1 being committed too.
    """

    number = models.OneToOneField(
        WhatsAppNumber,
        on_delete=models.CASCADE,
        primary_key=True,
        related_name="live_stream",
    )
    last_sequence = models.BigIntegerField(default=0)

    def __str__(self):
        return f"{self.number_id} at {self.last_sequence}"
