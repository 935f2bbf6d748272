"""Reply buttons and lists from the workspace's composer, and macros.

The agent writes a body and the options, one per line ("Title", or
"Title | description" for a list); the form checks Meta's limits
(whatsapp/payloads.py) and says which one an option breaks, and the send goes
through services.send_reply like any reply (which checks them again, and the
customer service window).
"""

from django import forms
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_POST

from .. import services
from ..live.rendering import render_fragment, render_message, render_note
from ..selectors.macros import macros_for
from ..selectors.thread import conversation_for, messages_queryset
from ..whatsapp import payloads
from .answers import answer, refusal, refused


class InteractiveForm(forms.Form):
    KINDS = (("buttons", "Reply buttons"), ("list", "List"))

    kind = forms.ChoiceField(choices=KINDS)
    body = forms.CharField(max_length=payloads.LIST_BODY_MAX, strip=True)
    button = forms.CharField(max_length=payloads.LIST_BUTTON_MAX, required=False)
    options = forms.CharField(strip=True)

    def clean(self):
        cleaned = super().clean()
        kind, options = cleaned.get("kind"), cleaned.get("options")
        if not kind or options is None:
            return cleaned
        lines = [line.strip() for line in options.splitlines() if line.strip()]
        if kind == "buttons":
            cleaned["content"] = self._buttons(cleaned.get("body", ""), lines)
        else:
            cleaned["content"] = self._list(
                cleaned.get("body", ""), cleaned.get("button", ""), lines
            )
        return cleaned

    def _buttons(self, body: str, lines: list[str]) -> dict:
        if not 1 <= len(lines) <= payloads.BUTTONS_MAX:
            raise forms.ValidationError("Reply buttons: 1 to 3 options, one per line.")
        too_long = [t for t in lines if len(t) > payloads.BUTTON_TITLE_MAX]
        if too_long:
            raise forms.ValidationError(
                f"Button titles have at most 20 characters: “{too_long[0]}”."
            )
        if len(set(lines)) != len(lines):
            raise forms.ValidationError("Each button needs a title of its own.")
        if len(body) > payloads.BUTTONS_BODY_MAX:
            raise forms.ValidationError(
                "With reply buttons the text has at most 1024 characters."
            )
        return payloads.interactive_buttons(
            body=body,
            buttons=[(f"option-{n}", title) for n, title in enumerate(lines, 1)],
        )

    def _list(self, body: str, button: str, lines: list[str]) -> dict:
        if not button:
            raise forms.ValidationError("A list needs a button label (up to 20).")
        if not 1 <= len(lines) <= payloads.LIST_ROWS_MAX:
            raise forms.ValidationError("A list: 1 to 10 options, one per line.")
        rows = []
        for n, line in enumerate(lines, 1):
            title, _, description = (part.strip() for part in line.partition("|"))
            if not title or len(title) > payloads.LIST_ROW_TITLE_MAX:
                raise forms.ValidationError(
                    f"List options have a title of 1 to 24 characters: “{line}”."
                )
            if len(description) > payloads.LIST_ROW_DESCRIPTION_MAX:
                raise forms.ValidationError(
                    f"Option descriptions have at most 72 characters: “{title}”."
                )
            rows.append((f"option-{n}", title, description))
        return payloads.interactive_list(body=body, button=button, rows=rows)


@login_required
@require_POST
def send_interactive(request: HttpRequest, pk: int) -> HttpResponse:
    """Send reply buttons or a list to the customer."""
    conversation = conversation_for(request.user, pk)
    if conversation is None:
        raise Http404("No such conversation")
    form = InteractiveForm(request.POST)
    if not form.is_valid():
        errors = [e for field in form.errors.values() for e in field]
        return refusal(request, conversation, errors[0], 400)
    try:
        message = services.send_reply(
            conversation=conversation,
            kind="interactive",
            content=form.cleaned_data["content"],
            sender=request.user,
        )
    except services.OutboundError as error:
        return refused(request, conversation, error)
    message = messages_queryset().get(pk=message.pk)
    html = render_message(message) + render_fragment("composer_error", {"error": ""})
    return answer(request, conversation, html, status=201)


@login_required
@require_POST
def run_macro(request: HttpRequest, pk: int) -> HttpResponse:
    """Run one of the conversation's macros; the note it leaves is the answer
    (the other changes reach the page as live events)."""
    conversation = conversation_for(request.user, pk)
    if conversation is None:
        raise Http404("No such conversation")
    macro_id = request.POST.get("macro", "")
    macro = next((m for m in macros_for(conversation) if str(m.pk) == macro_id), None)
    if macro is None:
        return refusal(request, conversation, "Choose a macro.", 400)
    try:
        services.run_macro(conversation=conversation, macro=macro, by=request.user)
    except services.ServiceError as error:
        return refused(request, conversation, error)
    note = conversation.notes.order_by("-pk").first()
    html = render_note(note) + render_fragment("composer_error", {"error": ""})
    return answer(request, conversation, html, status=201)
