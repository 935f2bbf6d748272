import json

from django import forms
from django.contrib import admin, messages
from django.db.models import Count, Q
from django.db.models.functions import Length
from django.shortcuts import redirect, render
from django.urls import path, reverse
from django.utils.html import format_html

from accounts.models import Team

from . import services, uploads
from .forms import (
    CallbackEndpointAdminForm,
    MetaAppAdminForm,
    WhatsAppNumberAdminForm,
)
from .models import (
    AccountNotice,
    AgentRouting,
    AwayReply,
    BusinessHours,
    CallbackDelivery,
    CallbackEndpoint,
    CannedResponse,
    ConsentRecord,
    Conversation,
    ConversationRouting,
    Customer,
    Holiday,
    Label,
    Macro,
    Message,
    MessageCharge,
    MessageTemplate,
    MetaApp,
    Note,
    Notification,
    NotificationBatch,
    OpeningHours,
    ParkedStatus,
    RateCard,
    Reaction,
    SatisfactionRating,
    SatisfactionSurvey,
    ServiceLevel,
    ServicePolicy,
    TeamRouting,
    WebhookEvent,
    WhatsAppNumber,
    mask_secret,
)
from .rules import business_hours as business_hours_rules


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


class MaskedSecretsAdmin(admin.ModelAdmin):
    """A model with secrets. Staff who may change it get the form's blank
    secret fields with the stored value masked (forms.SecretKeepingForm);
    staff who may only view it get every field read-only, where a secret
    would show in full, so it is swapped for its masked display."""

    # A secret field, and the display of this admin that shows it masked.
    masked_fields: dict[str, str] = {}

    def get_fields(self, request, obj=None):
        fields = super().get_fields(request, obj)
        if obj is None or self.has_change_permission(request, obj):
            return fields
        return [self.masked_fields.get(name, name) for name in fields]


@admin.register(MetaApp)
class MetaAppAdmin(MaskedSecretsAdmin):
    form = MetaAppAdminForm
    list_display = ("name", "app_id", "masked_app_secret", "number_count")
    search_fields = ("name", "app_id")
    masked_fields = {
        "app_secret": "masked_app_secret",
        "verify_token": "masked_verify_token",
    }

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(number_count=Count("numbers"))

    @admin.display(description="App secret")
    def masked_app_secret(self, app):
        return app.masked_app_secret

    @admin.display(description="Verify token")
    def masked_verify_token(self, app):
        return mask_secret(app.verify_token)

    @admin.display(description="Numbers", ordering="number_count")
    def number_count(self, app):
        return app.number_count


@admin.register(WhatsAppNumber)
class WhatsAppNumberAdmin(MaskedSecretsAdmin):
    form = WhatsAppNumberAdminForm
    masked_fields = {"access_token": "masked_access_token"}
    list_display = (
        "name",
        "display_phone_number",
        "phone_number_id",
        "waba_id",
        "app",
        "throughput",
        "masked_access_token",
        "is_active",
        "sending_state",
        "messaging_limit",
        "quality_event",
    )
    list_filter = ("is_active", "sending_paused", "app", "teams")
    list_select_related = ("app",)
    search_fields = ("name", "display_phone_number", "phone_number_id", "waba_id")
    filter_horizontal = ("teams",)
    # Reported by Meta's phone_number_quality_update webhooks; paused by
    # delivery when Meta refuses the number (e.g. 190, an expired token).
    readonly_fields = (
        "quality_event",
        "quality_rating",
        "messaging_limit",
        "quality_updated_at",
        "sending_paused",
        "sending_paused_reason",
        "sending_paused_since",
    )
    actions = ["resume_sending", "sync_templates_now"]

    @admin.display(description="Access token")
    def masked_access_token(self, number):
        return number.masked_access_token

    @admin.display(description="Sending", ordering="sending_paused")
    def sending_state(self, number):
        if not number.sending_paused:
            return "sending"
        return format_html(
            "<strong>paused</strong> since {}: {}",
            number.sending_paused_since or "?",
            number.sending_paused_reason or "no reason recorded",
        )

    @admin.action(
        description="Resume sending (after fixing the cause)", permissions=["change"]
    )
    def resume_sending(self, request, queryset):
        paused = list(queryset.filter(sending_paused=True))
        for number in paused:
            services.resume_sending(number=number)
        if paused:
            self.message_user(
                request,
                f"Sending resumed on {len(paused)} number(s); their queued "
                "messages go out now.",
                messages.SUCCESS,
            )
        else:
            self.message_user(request, "None of them was paused.", messages.INFO)

    @admin.action(description="Sync message templates now", permissions=["change"])
    def sync_templates_now(self, request, queryset):
        synced, seen = 0, set()
        for number in queryset:
            if number.waba_id in seen:
                continue  # one sync covers every number of the WABA
            seen.add(number.waba_id)
            try:
                synced += services.sync_templates(number=number)
            except Exception as error:  # Meta refused or is unreachable
                self.message_user(
                    request,
                    f"Templates of {number} not synced: {error}",
                    messages.ERROR,
                )
        self.message_user(
            request,
            f"{synced} template(s) synced from {len(seen)} account(s).",
            messages.SUCCESS,
        )


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
    list_display = ("customer", "purpose", "status", "source", "occurred_at")
    list_filter = ("purpose", "status", "source")
    list_select_related = ("customer",)
    search_fields = ("customer__name", "customer__profile_name", "customer__phone")
    raw_id_fields = ("customer",)
    readonly_fields = ("occurred_at", "recorded_at", "recorded_by", "event_key")

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

    def has_process_permission(self, request):
        """Processing writes what the events say: staff who may change events
        (the page stays read-only for everyone: has_change_permission)."""
        return super().has_change_permission(request)

    @admin.action(description="Process again", permissions=["process"])
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


# --- Business: notifications, batches, callbacks, rate cards -----------------------

DONE_STATUSES = ["sent", "delivered", "read", "played", "failed", "unknown"]


@admin.register(RateCard)
class RateCardAdmin(admin.ModelAdmin):
    """Meta's prices per market and category; a new price is a new dated row."""

    list_display = ("market", "category", "price", "currency", "valid_from")
    list_filter = ("category", "currency", "market")
    search_fields = ("market", "category")
    ordering = ("market", "category", "-valid_from")


@admin.register(MessageCharge)
class MessageChargeAdmin(admin.ModelAdmin):
    list_display = (
        "message",
        "conversation",
        "category",
        "pricing_type",
        "billable",
        "market",
        "price",
        "currency",
        "billed_at",
    )
    list_filter = ("category", "pricing_type", "billable")
    raw_id_fields = ("message", "conversation")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class NotificationInline(admin.TabularInline):
    model = Notification
    extra = 0
    fields = (
        "position",
        "to",
        "user_id",
        "reference",
        "delivery_status",
        "error",
        "message",
    )
    readonly_fields = fields
    can_delete = False
    show_change_link = True

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("message")

    def has_add_permission(self, request, obj=None):
        return False

    @admin.display(description="Status")
    def delivery_status(self, notification):
        return services.notification_status(notification)


class CsvUploadForm(forms.Form):
    number = forms.ModelChoiceField(WhatsAppNumber.objects.filter(is_active=True))
    template = forms.ModelChoiceField(
        MessageTemplate.objects.filter(status=MessageTemplate.Status.APPROVED)
    )
    purpose = forms.ChoiceField(choices=ConsentRecord.Purpose.choices)
    team = forms.ModelChoiceField(Team.objects.all(), required=False)
    name = forms.CharField(max_length=200, required=False)
    file = forms.FileField(
        help_text="Columns: phone (E.164) or user_id (a business-scoped user id), "
        "one per row; reference, body_1, body_2, ... or "
        "body_<name>, header, header_link, document_filename"
    )


@admin.register(NotificationBatch)
class NotificationBatchAdmin(admin.ModelAdmin):
    """Bulk sends with their progress; "Upload CSV" sends a new one."""

    list_display = (
        "__str__",
        "source",
        "template",
        "total",
        "queued",
        "refused",
        "progress",
        "created_at",
    )
    list_filter = ("source",)
    readonly_fields = (
        "name",
        "source",
        "template",
        "total",
        "queued",
        "refused",
        "progress",
        "created_by",
        "created_at",
    )
    fields = readonly_fields
    inlines = [NotificationInline]
    change_list_template = "admin/conversations/notificationbatch/change_list.html"

    def get_queryset(self, request):
        # The progress of every row in one query.
        return (
            super()
            .get_queryset(request)
            .select_related("template")
            .annotate(
                done=Count(
                    "notifications",
                    filter=Q(notifications__message__status__in=DONE_STATUSES),
                ),
                delivered=Count(
                    "notifications",
                    filter=Q(
                        notifications__message__status__in=[
                            "delivered",
                            "read",
                            "played",
                        ]
                    ),
                ),
            )
        )

    def has_add_permission(self, request):
        return False

    @admin.display(description="Progress")
    def progress(self, batch):
        finished = batch.done + batch.refused
        return format_html(
            '<progress value="{}" max="{}" aria-label="Sent or settled">'
            "</progress> {} of {} settled, {} delivered",
            finished,
            batch.total or 1,
            finished,
            batch.total,
            batch.delivered,
        )

    def get_urls(self):
        upload = uploads.accepts_upload("csv", refuse=self.upload_too_large)
        return [
            path(
                "upload/",
                self.admin_site.admin_view(upload(self.upload_view)),
                name="conversations_notificationbatch_upload",
            ),
            *super().get_urls(),
        ]

    def may_send(self, request) -> bool:
        if request.user.has_perm("conversations.send_notification"):
            return True
        messages.error(request, "You may not send notifications.")
        return False

    def upload_too_large(self, request):
        """A CSV past its limit, refused as it arrived: the form again."""
        if not self.may_send(request):
            return redirect("admin:conversations_notificationbatch_changelist")
        messages.error(request, uploads.refusal_text("csv"))
        return self.upload_page(request, CsvUploadForm(), status=413)

    def upload_view(self, request):
        if not self.may_send(request):
            return redirect("admin:conversations_notificationbatch_changelist")
        form = CsvUploadForm(request.POST or None, request.FILES or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            try:
                text = data["file"].read().decode("utf-8-sig")
                batch, _ = services.notifications_from_csv(
                    text=text,
                    number=data["number"],
                    template=data["template"],
                    purpose=data["purpose"],
                    team=data["team"],
                    created_by=request.user,
                    name=data["name"] or data["file"].name,
                )
            except UnicodeDecodeError:
                form.add_error("file", "The file is not UTF-8 text.")
            except services.OutboundError as error:
                form.add_error(None, error.detail)
            else:
                messages.success(
                    request,
                    f"{batch.queued} notifications queued, {batch.refused} refused.",
                )
                return redirect(
                    reverse(
                        "admin:conversations_notificationbatch_change", args=[batch.pk]
                    )
                )
        return self.upload_page(request, form)

    def upload_page(self, request, form, status=200):
        context = {
            **self.admin_site.each_context(request),
            "form": form,
            "title": "Send notifications from a CSV file",
            "opts": self.model._meta,
        }
        return render(
            request,
            "admin/conversations/notificationbatch/upload.html",
            context,
            status=status,
        )


@admin.register(Notification)
class NotificationAdmin(admin.ModelAdmin):
    list_display = (
        "pk",
        "to",
        "user_id",
        "template_name",
        "reference",
        "delivery_status",
        "team",
        "batch",
        "created_at",
    )
    list_filter = ("state", "purpose", "template_name")
    list_select_related = ("message", "team", "batch")
    search_fields = ("to", "user_id", "reference", "idempotency_key")
    date_hierarchy = "created_at"
    raw_id_fields = ("customer", "message", "conversation", "batch", "template")

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.display(description="Status")
    def delivery_status(self, notification):
        return services.notification_status(notification)


@admin.register(CallbackEndpoint)
class CallbackEndpointAdmin(MaskedSecretsAdmin):
    form = CallbackEndpointAdminForm
    list_display = ("name", "url", "masked_secret", "active", "created_at")
    list_filter = ("active",)
    masked_fields = {"secret": "masked_secret"}

    @admin.display(description="Secret")
    def masked_secret(self, endpoint):
        return endpoint.masked_secret


@admin.register(CallbackDelivery)
class CallbackDeliveryAdmin(admin.ModelAdmin):
    """The delivery log of status callbacks to the business."""

    list_display = (
        "created_at",
        "endpoint",
        "notification",
        "event",
        "state",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "delivered_at",
    )
    list_filter = ("state", "event", "endpoint")
    list_select_related = ("endpoint",)
    readonly_fields = (
        "endpoint",
        "notification",
        "event",
        "payload_display",
        "state",
        "attempts",
        "next_attempt_at",
        "last_status_code",
        "last_error",
        "created_at",
        "delivered_at",
    )
    exclude = ("payload",)
    actions = ["send_again"]

    def has_add_permission(self, request):
        return False

    @admin.display(description="Body")
    def payload_display(self, delivery):
        return pretty_json(delivery.payload)

    @admin.action(
        description="Send the selected callbacks again", permissions=["change"]
    )
    def send_again(self, request, queryset):
        for delivery in queryset:
            services.retry_callback(delivery=delivery)
        messages.success(request, "Queued again.")


# --- Routing: auto-assignment ------------------------------------------------------


class RecordsAdmin(admin.ModelAdmin):
    """Rows the helpdesk keeps as a record of what it did: read only."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TeamRouting)
class TeamRoutingAdmin(admin.ModelAdmin):
    """A team's auto-assignment; saving routes its waiting conversations."""

    list_display = ("team", "mode", "capacity", "offline_grace_minutes", "updated_at")
    list_filter = ("mode",)
    list_select_related = ("team",)

    def get_readonly_fields(self, request, obj=None):
        # The team is the row's identity; pick another team in a new row.
        return ("team",) if obj else ()

    def save_model(self, request, obj, form, change):
        routing = services.configure_team_routing(
            team=obj.team,
            mode=obj.mode,
            capacity=obj.capacity,
            offline_grace_minutes=obj.offline_grace_minutes,
        )
        obj.pk = routing.pk


@admin.register(AgentRouting)
class AgentRoutingAdmin(admin.ModelAdmin):
    """Agents' own capacity and exclusion; their turn and offline time are
    kept by auto-assignment."""

    list_display = (
        "agent",
        "capacity",
        "excluded",
        "presence",
        "open_conversations",
        "last_assigned_at",
    )
    list_filter = ("excluded",)
    list_select_related = ("agent",)
    search_fields = ("agent__username", "agent__display_name")
    readonly_fields = ("last_turn", "last_assigned_at", "offline_since")

    def get_readonly_fields(self, request, obj=None):
        return ("agent", *self.readonly_fields) if obj else self.readonly_fields

    def get_queryset(self, request):
        return (
            super()
            .get_queryset(request)
            .annotate(
                open_count=Count(
                    "agent__assigned_conversations",
                    filter=Q(
                        agent__assigned_conversations__status__in=(
                            services.LOAD_STATUSES
                        )
                    ),
                )
            )
        )

    @admin.display(description="Presence")
    def presence(self, routing):
        return routing.agent.get_presence_display()

    @admin.display(description="Open and pending", ordering="open_count")
    def open_conversations(self, routing):
        return routing.open_count

    def save_model(self, request, obj, form, change):
        routing = services.configure_agent_routing(
            agent=obj.agent, capacity=obj.capacity, excluded=obj.excluded
        )
        obj.pk = routing.pk


@admin.register(ConversationRouting)
class ConversationRoutingAdmin(RecordsAdmin):
    """What auto-assignment did with each conversation (read only)."""

    list_display = (
        "conversation",
        "assigned_to",
        "assigned_at",
        "manual",
        "given_back_at",
    )
    list_filter = ("manual",)
    list_select_related = (
        "conversation__customer",
        "conversation__number",
        "assigned_to",
    )
    raw_id_fields = ("conversation",)


# --- Routing: business hours ------------------------------------------------------


def one_of(cleaned: dict, first: str, second: str, what: str) -> dict:
    """A form's cleaned data, refused unless exactly one owner is given."""
    if bool(cleaned.get(first)) == bool(cleaned.get(second)):
        raise forms.ValidationError(f"Give the {what} to a {first} or to a {second}.")
    return cleaned


class OpeningHoursFormSet(forms.BaseInlineFormSet):
    def clean(self):
        super().clean()
        intervals = [
            (
                form.cleaned_data["weekday"],
                form.cleaned_data["opens"],
                form.cleaned_data["closes"],
            )
            for form in self.forms
            if form.cleaned_data
            and not form.cleaned_data.get("DELETE")
            and form.cleaned_data.get("opens") is not None
            and form.cleaned_data.get("closes") is not None
        ]
        problem = business_hours_rules.interval_problem(intervals)
        if problem:
            raise forms.ValidationError(problem)


class OpeningHoursInline(admin.TabularInline):
    model = OpeningHours
    formset = OpeningHoursFormSet
    extra = 0


class HolidayInline(admin.TabularInline):
    model = Holiday
    extra = 0


class BusinessHoursForm(forms.ModelForm):
    class Meta:
        model = BusinessHours
        fields = ("name", "time_zone", "team", "number", "away_message")

    def clean(self):
        return one_of(super().clean(), "team", "number", "hours")


@admin.register(BusinessHours)
class BusinessHoursAdmin(admin.ModelAdmin):
    """When teams and numbers are open, their holidays and away reply."""

    form = BusinessHoursForm
    inlines = (OpeningHoursInline, HolidayInline)
    list_display = ("name", "team", "number", "time_zone", "open_now", "has_away")
    list_select_related = ("team", "number")
    search_fields = ("name",)

    def get_queryset(self, request):
        return (
            super().get_queryset(request).prefetch_related("opening_hours", "holidays")
        )

    @admin.display(description="Open now", boolean=True)
    def open_now(self, hours):
        return services.is_open_now(hours)

    @admin.display(description="Away reply", boolean=True)
    def has_away(self, hours):
        return bool(hours.away_message)


@admin.register(AwayReply)
class AwayReplyAdmin(RecordsAdmin):
    """Which conversations got the away reply in which closed period."""

    list_display = ("conversation", "closed_since", "message", "sent_at")
    list_select_related = ("conversation__customer", "conversation__number", "message")
    raw_id_fields = ("conversation", "message")


# --- Routing: service levels ------------------------------------------------------


class ServicePolicyForm(forms.ModelForm):
    class Meta:
        model = ServicePolicy
        fields = (
            "name",
            "team",
            "label",
            "first_response_minutes",
            "next_response_minutes",
            "resolution_minutes",
            "business_hours_only",
        )

    def clean(self):
        return one_of(super().clean(), "team", "label", "policy")


@admin.register(ServicePolicy)
class ServicePolicyAdmin(admin.ModelAdmin):
    """Promised response and resolution times per team or label."""

    form = ServicePolicyForm
    list_display = (
        "name",
        "team",
        "label",
        "first_response_minutes",
        "next_response_minutes",
        "resolution_minutes",
        "business_hours_only",
    )
    list_select_related = ("team", "label")


@admin.register(ServiceLevel)
class ServiceLevelAdmin(RecordsAdmin):
    """Each conversation's standing (kept by the service-level sweep)."""

    list_display = (
        "conversation",
        "policy",
        "due_at",
        "escalated",
        "first_response_met",
        "next_responses_met",
        "next_responses_missed",
        "resolution_met",
    )
    list_filter = ("escalated", "first_response_met", "resolution_met")
    list_select_related = (
        "conversation__customer",
        "conversation__number",
        "policy",
    )
    raw_id_fields = ("conversation",)


# --- Routing: customer satisfaction -----------------------------------------------


@admin.register(SatisfactionSurvey)
class SatisfactionSurveyAdmin(admin.ModelAdmin):
    """Teams' surveys after a resolution: on or off, and their wording."""

    list_display = ("team", "enabled", "question", "button")
    list_select_related = ("team",)

    def save_model(self, request, obj, form, change):
        survey = services.configure_satisfaction_survey(
            team=obj.team,
            enabled=obj.enabled,
            question=obj.question,
            button=obj.button,
            thanks=obj.thanks,
        )
        obj.pk = survey.pk


@admin.register(SatisfactionRating)
class SatisfactionRatingAdmin(RecordsAdmin):
    """Surveys sent and the customers' answers."""

    list_display = ("conversation", "agent", "team", "sent_at", "score", "comment")
    list_filter = ("score",)
    list_select_related = (
        "conversation__customer",
        "conversation__number",
        "agent",
        "team",
    )
    raw_id_fields = ("conversation", "message")


# --- Routing: macros ---------------------------------------------------------------


@admin.register(Macro)
class MacroAdmin(admin.ModelAdmin):
    """Named sets of actions agents run with one click."""

    list_display = ("name", "team", "set_team", "reply", "resolve")
    list_select_related = ("team", "set_team", "reply")
    filter_horizontal = ("add_labels",)
    search_fields = ("name",)
