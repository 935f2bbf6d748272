"""The agent workspace: the inbox, a conversation, and the actions on it.

Pages render the fragments of templates/conversations/fragments.html; actions
validate the form, call one service and answer with the fragments that
changed (htmx), or redirect back (no script). Every lookup goes through
visible_to(), so a foreign or unknown id is a 404 either way.
"""

import mimetypes
from datetime import datetime

from django.contrib.auth.decorators import login_required
from django.core.exceptions import ValidationError
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.utils import timezone
from django.views.decorators.http import require_GET, require_POST

from accounts.models import User, available_time_zones

from .. import services, uploads
from ..live.rendering import (
    render_fragment,
    render_message,
    render_note,
    render_row,
)
from ..models import ConsentRecord, Conversation, Label, Message, MessageTemplate
from ..rules import canned
from ..selectors.composer import canned_responses
from ..selectors.inbox import InboxCursor, InboxFilter
from ..selectors.thread import (
    ThreadCursor,
    WindowState,
    agents_who_may_see,
    conversation_for,
    messages_queryset,
)
from ..whatsapp import templates as meta_templates
from .answers import answer, refusal, refused
from .context import (
    composer_context,
    conversation_context,
    customer_context,
    fill_canned,
    inbox_context,
    page_context,
    thread_context,
)


@login_required
@require_GET
def inbox(request: HttpRequest) -> HttpResponse:
    """The conversations the agent may see, filtered and ordered."""
    inbox_filter = InboxFilter.from_query(request.GET)
    return render(
        request,
        "conversations/workspace.html",
        page_context(request.user, inbox_filter),
    )


@login_required
@require_GET
def inbox_more(request: HttpRequest) -> HttpResponse:
    """The inbox's next page of rows, after the row given by `after` (without
    it, the first page), as fragments: the rows place themselves by their
    data-sort, and "Load more conversations" is replaced by the next one."""
    inbox_filter = InboxFilter.from_query(request.GET)
    context = inbox_context(
        request.user,
        inbox_filter,
        after=InboxCursor.from_query(request.GET),
    )
    html = render_fragment("inbox_rows", context)
    html += render_fragment("inbox_more", context)
    return HttpResponse(html)


@login_required
@require_GET
def conversation_detail(request: HttpRequest, pk: int) -> HttpResponse:
    """The inbox with one conversation open; opening it marks it read."""
    inbox_filter = InboxFilter.from_query(request.GET)
    context = page_context(request.user, inbox_filter)
    conversation = _conversation(request, pk)
    if conversation.unread_count:
        services.open_conversation(conversation=conversation, agent=request.user)
        conversation.unread_count = 0
    context.update(conversation_context(conversation, request.user))
    return render(request, "conversations/workspace.html", context)


@login_required
@require_GET
def older_messages(request: HttpRequest, pk: int) -> HttpResponse:
    """The page of the thread before the oldest message shown, as fragments.

    The bubbles are the page's own partials (they place themselves by their
    data-sort); the "Load older messages" link is replaced by the next one.
    """
    conversation = _conversation(request, pk)
    cursor = ThreadCursor.from_query(request.GET)
    if cursor is None:
        return HttpResponse("Which messages? (before_ts, before_id)", status=400)
    context = thread_context(conversation, before=cursor)
    html = render_fragment("thread_items", context)
    html += render_fragment("thread_older", context)
    return HttpResponse(html)


def _conversation(request: HttpRequest, pk: int) -> Conversation:
    conversation = conversation_for(request.user, pk)
    if conversation is None:
        raise Http404("No such conversation")
    return conversation


def _message(request: HttpRequest, pk: int) -> Message:
    message = (
        messages_queryset()
        .select_related("conversation__number", "conversation__customer")
        .filter(pk=pk, conversation__in=Conversation.objects.visible_to(request.user))
        .first()
    )
    if message is None:
        raise Http404("No such message")
    return message


def _composer_html(conversation: Conversation, user: User, error: str = "") -> str:
    conversation.refresh_from_db(
        fields=["last_inbound_at", "free_entry_point_expires_at"]
    )
    return render_fragment(
        "composer", {**composer_context(conversation, user), "error": error}
    )


@login_required
@require_GET
def composer(request: HttpRequest, pk: int) -> HttpResponse:
    """The composer as it should be now (the script asks when the window closes)."""
    conversation = _conversation(request, pk)
    return HttpResponse(_composer_html(conversation, request.user))


def _attachment_too_large(request: HttpRequest, pk: int) -> HttpResponse:
    """The composer's answer to an attachment past its limit (uploads.py)."""
    conversation = _conversation(request, pk)
    return refusal(request, conversation, uploads.refusal_text("composer"), 413)


@login_required
@uploads.accepts_upload("composer", refuse=_attachment_too_large)
@require_POST
def reply(request: HttpRequest, pk: int) -> HttpResponse:
    """Send text or an attachment (with the text as caption), maybe quoting."""
    conversation = _conversation(request, pk)
    text = request.POST.get("text", "").strip()
    upload = request.FILES.get("file")
    shortcut = canned.shortcut_of(text)
    if shortcut and any(r.shortcut == shortcut for r in canned_responses(request.user)):
        # The agent meant the canned reply, not "/shortcut" for the customer.
        return refusal(
            request,
            conversation,
            f"/{shortcut} is a canned reply's shortcut: choose it in the list "
            "that opens as you type (Enter or Tab) to insert its text.",
            422,
        )
    reply_to = None
    if request.POST.get("reply_to", "").isdigit():
        reply_to = conversation.messages.filter(pk=request.POST["reply_to"]).first()
    try:
        if upload is not None:
            mime_type = (
                upload.content_type
                or mimetypes.guess_type(upload.name)[0]
                or "application/octet-stream"
            )
            message = services.send_attachment(
                conversation=conversation,
                kind=_media_kind(mime_type),
                attachment=services.Attachment(
                    data=upload.read(), filename=upload.name, mime_type=mime_type
                ),
                caption=text,
                sender=request.user,
                reply_to=reply_to,
            )
        elif text:
            message = services.send_reply(
                conversation=conversation,
                kind="text",
                content={"body": text},
                sender=request.user,
                reply_to=reply_to,
            )
        else:
            return refusal(request, conversation, "Write a message first.", 400)
    except services.WindowClosed as error:
        html = _composer_html(conversation, request.user, error=error.detail)
        return answer(request, conversation, html, status=409)
    except services.OutboundError as error:
        return refused(request, conversation, error)
    message = messages_queryset().get(pk=message.pk)
    return answer(request, conversation, render_message(message), status=201)


def _media_kind(mime_type: str) -> str:
    if mime_type.startswith("image/") and mime_type != "image/webp":
        return "image"
    if mime_type == "image/webp":
        return "sticker"
    if mime_type.startswith("video/"):
        return "video"
    if mime_type.startswith("audio/"):
        return "audio"
    return "document"


@login_required
@require_POST
def send_template(request: HttpRequest, pk: int) -> HttpResponse:
    """Send an approved template of the number's WABA with its parameters."""
    conversation = _conversation(request, pk)
    template = MessageTemplate.objects.filter(
        pk=request.POST.get("template") or 0,
        waba_id=conversation.number.waba_id,
        status=MessageTemplate.Status.APPROVED,
    ).first()
    if template is None:
        return refusal(request, conversation, "Choose an approved template.", 422)
    fields = meta_templates.fields(template)
    try:
        body = {name: _body_value(request, name) for name in fields["body"]}
    except meta_templates.ParametersRefused as error:
        invalid = services.TemplateParametersInvalid(str(error))
        return refused(request, conversation, invalid)
    # The shapes services.template_components takes: named or positional.
    parameters: dict = {"body": body if fields["named"] else list(body.values())}
    buttons = [
        meta_templates.button_value(
            button, request.POST.get(f"button_{button['index']}", "").strip()
        )
        for button in fields["buttons"]
    ]
    if any(buttons):
        parameters["buttons"] = [button for button in buttons if button]
    if fields["header"] in {"image", "video", "document"}:
        parameters["header"] = {
            fields["header"]: {"link": request.POST.get("header_link", "")}
        }
    elif fields["header"]:
        parameters["header"] = request.POST.get("header", "")
    try:
        message = services.send_template(
            conversation=conversation,
            template=template,
            parameters=parameters,
            sender=request.user,
        )
    except services.OutboundError as error:
        return refused(request, conversation, error)
    message = messages_queryset().get(pk=message.pk)
    return answer(request, conversation, render_message(message), status=201)


def _body_value(request: HttpRequest, name: str):
    """A template body value from the composer: text, an amount, a date."""
    field = f"body_{name}"
    return meta_templates.composer_body_value(
        name,
        request.POST.get(f"{field}__kind", ""),
        text=request.POST.get(field, ""),
        amount=request.POST.get(f"{field}__amount", ""),
        code=request.POST.get(f"{field}__code", ""),
        when=request.POST.get(f"{field}__when", ""),
        fallback=request.POST.get(f"{field}__fallback", ""),
    )


@login_required
@require_POST
def react(request: HttpRequest, pk: int) -> HttpResponse:
    message = _message(request, pk)
    try:
        services.react(
            message=message,
            emoji=request.POST.get("emoji", "")[:32],
            sender=request.user,
        )
    except services.OutboundError as error:
        return refused(request, message.conversation, error)
    message = messages_queryset().get(pk=message.pk)
    return answer(request, message.conversation, render_message(message))


@login_required
@require_POST
def resend(request: HttpRequest, pk: int) -> HttpResponse:
    message = _message(request, pk)
    try:
        new = services.resend_message(message=message, sender=request.user)
    except services.OutboundError as error:
        return refused(request, message.conversation, error)
    new = messages_queryset().get(pk=new.pk)
    return answer(request, message.conversation, render_message(new), 201)


@login_required
@require_POST
def add_note(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = _conversation(request, pk)
    try:
        note = services.add_note(
            conversation=conversation,
            author=request.user,
            body=request.POST.get("body", "")[:10000],
        )
    except services.WorkspaceError as error:
        return refused(request, conversation, error)
    return answer(request, conversation, render_note(note), 201)


def _header_html(conversation_pk: int, user: User) -> str:
    conversation = conversation_for(user, conversation_pk)
    if conversation is None:
        return ""
    return render_fragment(
        "header",
        {
            "conversation": conversation,
            "window": WindowState.of(conversation),
        },
    ) + render_row(conversation)


@login_required
@require_POST
def assign(request: HttpRequest, pk: int) -> HttpResponse:
    """Assign to me, to an agent or to a team ("none" takes it away)."""
    conversation = _conversation(request, pk)
    changes = {}
    assignee = request.POST.get("assignee", "")
    if assignee == "me":
        changes["assignee"] = request.user
    elif assignee == "none":
        changes["assignee"] = None
    elif assignee.isdigit():
        # Unknown and not allowed answer alike: a guessed id reveals nobody.
        agent = agents_who_may_see(conversation.number_id).filter(pk=assignee).first()
        if agent is None:
            return refused(request, conversation, services.AssigneeNotAllowed())
        changes["assignee"] = agent
    team = request.POST.get("team", "")
    if team == "none":
        changes["team"] = None
    elif team.isdigit():
        found = conversation.number.teams.filter(pk=team).first()
        if found is None:
            return refused(request, conversation, services.TeamNotAllowed())
        changes["team"] = found
    if not changes:
        return answer(request, conversation, "")
    try:
        services.assign_conversation(
            conversation=conversation, by=request.user, **changes
        )
    except services.WorkspaceError as error:
        return refused(request, conversation, error)
    return answer(request, conversation, _header_html(conversation.pk, request.user))


@login_required
@require_POST
def change_status(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = _conversation(request, pk)
    snoozed_until = None
    raw = request.POST.get("snoozed_until", "").strip()
    if raw:
        try:
            snoozed_until = datetime.fromisoformat(raw)
            if timezone.is_naive(snoozed_until):
                # A datetime-local field's value: the agent's wall clock (the
                # time zone the middleware activated).
                snoozed_until = timezone.make_aware(snoozed_until)
        except (ValueError, ValidationError):
            return refusal(request, conversation, "Give the snooze time.", 400)
    try:
        services.change_status(
            conversation=conversation,
            status=request.POST.get("status", ""),
            snoozed_until=snoozed_until,
            by=request.user,
        )
    except services.WorkspaceError as error:
        return refused(request, conversation, error)
    return answer(request, conversation, _header_html(conversation.pk, request.user))


@login_required
@require_POST
def set_labels(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = _conversation(request, pk)
    ids = [value for value in request.POST.getlist("labels") if value.isdigit()]
    labels = list(Label.objects.filter(pk__in=ids))
    services.set_labels(conversation=conversation, labels=labels, by=request.user)
    return answer(request, conversation, _header_html(conversation.pk, request.user))


@login_required
@require_POST
def record_consent(request: HttpRequest, pk: int) -> HttpResponse:
    """An agent records what the customer said: opt-in or opt-out (business)."""
    conversation = _conversation(request, pk)
    status = request.POST.get("status", "")
    purpose = request.POST.get("purpose", "")
    wording = request.POST.get("wording", "")[:2000]
    purposes = ConsentRecord.Purpose.values if purpose == "all" else [purpose]
    if status not in ConsentRecord.Status.values or not set(purposes) <= set(
        ConsentRecord.Purpose.values
    ):
        return _customer_panel(
            request, conversation, error="Choose a purpose and opt-in or opt-out."
        )
    for each in purposes:
        services.record_consent(
            customer=conversation.customer,
            purpose=each,
            status=status,
            source=ConsentRecord.Source.AGENT,
            wording=wording,
            recorded_by=request.user,
        )
    return _customer_panel(request, conversation)


def _customer_panel(
    request: HttpRequest, conversation: Conversation, error: str = ""
) -> HttpResponse:
    """The customer panel again, with the reason a consent was refused (422)."""
    context = customer_context(conversation, request.user)
    context["consent_error"] = error
    html = render_fragment("customer", context)
    return answer(request, conversation, html, status=422 if error else 200)


@login_required
@require_POST
def rename_customer(request: HttpRequest, pk: int) -> HttpResponse:
    conversation = _conversation(request, pk)
    services.rename_customer(
        customer=conversation.customer,
        name=request.POST.get("name", ""),
        by=request.user,
    )
    return answer(request, conversation, _header_html(conversation.pk, request.user))


@login_required
@require_POST
def set_availability(request: HttpRequest) -> HttpResponse:
    try:
        user = services.set_availability(
            user=request.user, availability=request.POST.get("availability", "")
        )
    except services.WorkspaceError as error:
        html = render_fragment("availability_error", {"error": error.message})
        return HttpResponse(html, status=400)
    if request.headers.get("HX-Request"):
        return HttpResponse(
            render_fragment("agent", {"agent": user})
            + render_fragment("availability_error", {"error": ""})
        )
    return redirect("conversations:inbox")


@login_required
@require_POST
def set_time_zone(request: HttpRequest) -> HttpResponse:
    """The browser's time zone, sent by the workspace when it is not the
    agent's yet: the agent's pages show and read times in it from now."""
    time_zone = request.POST.get("time_zone", "")
    if time_zone not in available_time_zones():
        return HttpResponse(
            "Unknown time zone.", status=400, content_type="text/plain; charset=utf-8"
        )
    services.set_time_zone(user=request.user, time_zone=time_zone)
    return HttpResponse(status=204)


@login_required
@require_GET
def canned_text(request: HttpRequest, pk: int, canned_pk: int) -> HttpResponse:
    """A canned response with the open conversation's variables filled in."""
    conversation = _conversation(request, pk)
    response = next(
        (r for r in canned_responses(request.user) if r.pk == canned_pk),
        None,
    )
    if response is None:
        raise Http404("No such canned response")
    text = fill_canned(response.text, conversation=conversation, agent=request.user)
    return HttpResponse(text, content_type="text/plain; charset=utf-8")
