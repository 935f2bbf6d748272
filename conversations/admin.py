import json

from django.contrib import admin, messages
from django.db.models import Count
from django.db.models.functions import Length
from django.utils.html import format_html

from . import services
from .forms import MetaAppAdminForm, WhatsAppNumberAdminForm
from .models import (
    AccountNotice,
    CannedResponse,
    ConsentRecord,
    Conversation,
    Customer,
    Label,
    Message,
    MessageTemplate,
    MetaApp,
    Note,
    ParkedStatus,
    Reaction,
    WebhookEvent,
    WhatsAppNumber,
)


def pretty_json(value) -> str:
    """Render JSON data (or raw bytes of it) escaped and indented in a <pre>."""
    if isinstance(value, bytes | memoryview):
        raw = bytes(value)
        try:
            value = json.loads(raw)
        except ValueError:
            return format_html(
                '<pre class="raw-payload">{}</pre>', raw.decode("utf-8", "replace")
            )
    text = json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False)
    return format_html('<pre class="raw-payload">{}</pre>', text)


@admin.register(MetaApp)
class MetaAppAdmin(admin.ModelAdmin):
    form = MetaAppAdminForm
    list_display = ("name", "app_id", "masked_app_secret", "number_count")
    search_fields = ("name", "app_id")

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(number_count=Count("numbers"))

    @admin.display(description="App secret")
    def masked_app_secret(self, app):
        return app.masked_app_secret

    @admin.display(description="Numbers", ordering="number_count")
    def number_count(self, app):
        return app.number_count


@admin.register(WhatsAppNumber)
class WhatsAppNumberAdmin(admin.ModelAdmin):
    form = WhatsAppNumberAdminForm
    list_display = (
        "name",
        "display_phone_number",
        "phone_number_id",
        "waba_id",
        "app",
        "throughput",
        "masked_access_token",
        "is_active",
        "messaging_limit",
        "quality_event",
    )
    list_filter = ("is_active", "app", "teams")
    list_select_related = ("app",)
    search_fields = ("name", "display_phone_number", "phone_number_id", "waba_id")
    filter_horizontal = ("teams",)
    # Reported by Meta's phone_number_quality_update webhooks.
    readonly_fields = (
        "quality_event",
        "quality_rating",
        "messaging_limit",
        "quality_updated_at",
    )

    @admin.display(description="Access token")
    def masked_access_token(self, number):
        return number.masked_access_token


class ConsentRecordInline(admin.TabularInline):
    model = ConsentRecord
    extra = 0
    fields = ("recorded_at", "purpose", "status", "source", "wording", "recorded_by")
    readonly_fields = ("recorded_at", "recorded_by")
    # The ledger is evidence: records are added, never edited away.
    can_delete = False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Customer)
class CustomerAdmin(admin.ModelAdmin):
    list_display = ("display_name", "phone", "wa_id", "user_id", "created_at")
    search_fields = ("name", "profile_name", "phone", "wa_id", "user_id", "username")
    readonly_fields = ("profile_name", "created_at", "updated_at")
    inlines = [ConsentRecordInline]
    date_hierarchy = "created_at"

    def save_formset(self, request, form, formset, change):
        for record in formset.save(commit=False):
            record.recorded_by = request.user
            record.save()
        formset.save_m2m()


@admin.register(ConsentRecord)
class ConsentRecordAdmin(admin.ModelAdmin):
    list_display = ("customer", "purpose", "status", "source", "recorded_at")
    list_filter = ("purpose", "status", "source")
    list_select_related = ("customer",)
    search_fields = ("customer__name", "customer__profile_name", "customer__phone")
    raw_id_fields = ("customer",)
    readonly_fields = ("recorded_at", "recorded_by")

    def has_change_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        obj.recorded_by = request.user
        super().save_model(request, obj, form, change)


@admin.register(Label)
class LabelAdmin(admin.ModelAdmin):
    list_display = ("name", "color")
    search_fields = ("name",)


class MessageInline(admin.TabularInline):
    model = Message
    extra = 0
    fields = ("timestamp", "direction", "type", "text", "status", "wamid")
    readonly_fields = fields
    can_delete = False
    show_change_link = True
    ordering = ("timestamp", "id")

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "customer",
        "number",
        "status",
        "assignee",
        "team",
        "last_message_at",
    )
    list_filter = ("status", "number", "team", "assignee", "labels")
    list_select_related = ("customer", "number", "assignee", "team")
    search_fields = (
        "customer__name",
        "customer__profile_name",
        "customer__phone",
        "customer__wa_id",
    )
    raw_id_fields = ("customer", "last_message")
    filter_horizontal = ("labels",)
    readonly_fields = (
        "last_inbound_at",
        "last_message_at",
        "referral_display",
        "referral_source_id",
        "referral_ctwa_clid",
        "free_entry_point_expires_at",
        "first_response_at",
        "resolved_at",
        "created_at",
    )
    exclude = ("referral",)
    inlines = [MessageInline]
    date_hierarchy = "last_message_at"

    @admin.display(description="Referral (ad that started it)")
    def referral_display(self, conversation):
        if not conversation.referral:
            return "—"
        return pretty_json(conversation.referral)


class ReactionInline(admin.TabularInline):
    model = Reaction
    extra = 0
    fields = ("direction", "emoji", "reacted_at", "agent")
    readonly_fields = fields
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "id",
        "conversation_link",
        "direction",
        "type",
        "short_text",
        "status",
        "wamid",
        "timestamp",
    )
    list_filter = ("direction", "status", "type", "conversation__number")
    list_select_related = ("conversation__customer",)
    search_fields = (
        "wamid",
        "text",
        "conversation__customer__name",
        "conversation__customer__profile_name",
        "conversation__customer__phone",
    )
    raw_id_fields = ("conversation", "reply_to", "sender", "template")
    readonly_fields = (
        "payload_display",
        "error_display",
        "pricing_display",
        "created_at",
        "updated_at",
    )
    exclude = ("payload", "error", "pricing")
    inlines = [ReactionInline]
    date_hierarchy = "timestamp"

    @admin.display(description="Conversation")
    def conversation_link(self, message):
        return f"#{message.conversation_id} {message.conversation.customer}"

    @admin.display(description="Text")
    def short_text(self, message):
        text = message.text
        return text if len(text) <= 60 else text[:59] + "…"

    @admin.display(description="Payload")
    def payload_display(self, message):
        return pretty_json(message.payload)

    @admin.display(description="Error")
    def error_display(self, message):
        return pretty_json(message.error) if message.error else "—"

    @admin.display(description="Pricing")
    def pricing_display(self, message):
        return pretty_json(message.pricing) if message.pricing else "—"


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "language", "category", "status", "waba_id", "synced_at")
    list_filter = ("status", "category", "language", "waba_id")
    search_fields = ("name", "template_id")
    readonly_fields = ("components_display", "synced_at", "updated_at")
    exclude = ("components",)

    @admin.display(description="Components")
    def components_display(self, template):
        return pretty_json(template.components)


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    """Raw events are evidence of what Meta sent: viewable, never editable."""

    list_display = (
        "id",
        "received_at",
        "state",
        "app",
        "body_size",
        "attempts",
        "short_error",
    )
    list_filter = ("state", "app")
    actions = ["process_again"]
    list_select_related = ("app",)
    date_hierarchy = "received_at"
    fields = (
        "received_at",
        "state",
        "app",
        "signature_valid",
        "attempts",
        "processed_at",
        "last_error",
        "headers_display",
        "body_display",
    )
    readonly_fields = fields

    def get_queryset(self, request):
        # Bodies reach 3 MB: the list shows their size, not their bytes.
        return (
            super()
            .get_queryset(request)
            .defer("body")
            .annotate(body_length=Length("body"))
        )

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser

    @admin.display(description="Size (bytes)", ordering="body_length")
    def body_size(self, event):
        return event.body_length

    @admin.display(description="Headers")
    def headers_display(self, event):
        return pretty_json(event.headers)

    @admin.display(description="Problem")
    def short_error(self, event):
        text = event.last_error.splitlines()[0] if event.last_error else ""
        return text if len(text) <= 80 else text[:79] + "…"

    @admin.action(description="Process again")
    def process_again(self, request, queryset):
        """Process the selected events now; safe for processed ones (idempotent)."""
        done, failed = 0, 0
        for event_id in queryset.values_list("pk", flat=True)[:500]:
            try:
                services.process_webhook_event(event_id=event_id, force=True)
                done += 1
            except Exception:
                # Recorded on the event (attempts, last_error).
                failed += 1
        self.message_user(
            request,
            f"Processed {done} event(s)" + (f"; {failed} failed." if failed else "."),
            level=messages.WARNING if failed else messages.SUCCESS,
        )

    @admin.display(description="Payload")
    def body_display(self, event):
        return pretty_json(event.body)


# --- Agent workspace ------------------------------------------------------------


@admin.register(CannedResponse)
class CannedResponseAdmin(admin.ModelAdmin):
    list_display = ("shortcut", "title", "team")
    list_filter = ("team",)
    search_fields = ("shortcut", "title", "text")


@admin.register(Note)
class NoteAdmin(admin.ModelAdmin):
    list_display = ("conversation", "author", "created_at")
    list_select_related = ("conversation__customer", "conversation__number", "author")
    raw_id_fields = ("conversation",)
    readonly_fields = ("created_at",)


@admin.register(ParkedStatus)
class ParkedStatusAdmin(admin.ModelAdmin):
    """Statuses waiting for their send's wamid; applied when it is stored."""

    list_display = ("wamid", "status", "timestamp", "number", "received")
    list_filter = ("status", "number")
    list_select_related = ("number",)
    search_fields = ("wamid",)
    fields = ("wamid", "status", "timestamp", "number", "received", "raw_display")
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Status as Meta sent it")
    def raw_display(self, parked):
        return pretty_json(parked.raw)


@admin.register(AccountNotice)
class AccountNoticeAdmin(admin.ModelAdmin):
    """What Meta said about accounts, numbers and templates."""

    list_display = ("occurred_at", "kind", "event", "number", "waba_id", "summary")
    list_filter = ("kind", "event", "number")
    list_select_related = ("number",)
    search_fields = ("summary", "waba_id", "event")
    date_hierarchy = "occurred_at"
    fields = (
        "occurred_at",
        "kind",
        "event",
        "waba_id",
        "number",
        "summary",
        "raw_display",
        "created_at",
    )
    readonly_fields = fields

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="As Meta sent it")
    def raw_display(self, notice):
        return pretty_json(notice.raw)
