"""How the workspace's actions answer, refusals included.

An htmx request gets the fragments that changed, with the status; a form
posted without the script is sent back to the conversation. A service that
refuses an action (a ServiceError) is answered here, in one place: its
reason shown under the composer, with the status api/exceptions.py gives its
code.
"""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect

from .. import services
from ..api.exceptions import http_status
from ..live.rendering import render_fragment
from ..models import Conversation


def answer(
    request: HttpRequest, conversation: Conversation, html: str = "", status=200
) -> HttpResponse:
    if request.headers.get("HX-Request"):
        if status < 400:
            # What went wrong before is no longer so once an action succeeds.
            html += render_fragment("composer_error", {"error": ""})
        return HttpResponse(html, status=status)
    return redirect("conversations:detail", conversation.pk)


def refusal(
    request: HttpRequest, conversation: Conversation, message: str, status: int = 409
) -> HttpResponse:
    """The reason an action was not done, under the composer."""
    html = render_fragment("composer_error", {"error": message})
    return answer(request, conversation, html, status=status)


def refused(
    request: HttpRequest, conversation: Conversation, error: services.ServiceError
) -> HttpResponse:
    """A service's refusal as the agent sees it, with the HTTP status its code
    has in the REST API too (window closed 409, template parameters 422...)."""
    return refusal(request, conversation, error.detail, http_status(error))
