"""Labels and canned replies, kept by admins in the workspace.

The page lists both with a form to add each and, per row, forms to change
or remove it; every form posts back here and the page is shown again with
what was refused and why (a colour, a shortcut taken, a placeholder the
composer cannot fill). Agents without the permissions get a 403.
"""

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods

from accounts.models import Team

from .. import services
from ..models import CannedResponse, Label
from ..rules import canned

LABEL_PERMISSION = "conversations.change_label"
CANNED_PERMISSION = "conversations.change_cannedresponse"


def may_manage(user) -> bool:
    """Whether the workspace offers this agent the labels and replies page."""
    return user.has_perm(LABEL_PERMISSION) or user.has_perm(CANNED_PERMISSION)


def _page(request: HttpRequest, *, errors: dict | None = None, status=200):
    errors = errors or {}
    labels = list(Label.objects.all()) if _may(request, "label") else None
    replies = (
        list(CannedResponse.objects.select_related("team"))
        if _may(request, "canned")
        else None
    )
    # Each row shows why its last change was refused.
    for label in labels or []:
        label.form_errors = errors.get(f"label-{label.pk}", [])
    for response in replies or []:
        response.form_errors = errors.get(f"canned-{response.pk}", [])
    return render(
        request,
        "conversations/manage.html",
        {
            "labels": labels,
            "replies": replies,
            "teams": list(Team.objects.all()),
            "placeholders": canned.PLACEHOLDERS,
            "errors": errors,
            "posted": request.POST if errors else {},
        },
        status=status,
    )


def _may(request: HttpRequest, kind: str) -> bool:
    permission = LABEL_PERMISSION if kind == "label" else CANNED_PERMISSION
    return request.user.has_perm(permission)


@login_required
@require_http_methods(["GET", "POST"])
def manage_lists(request: HttpRequest) -> HttpResponse:
    """The page; a POST adds, changes or removes one label or canned reply."""
    if not may_manage(request.user):
        raise PermissionDenied
    if request.method == "GET":
        return _page(request)
    kind = request.POST.get("kind", "")
    if kind not in {"label", "canned"} or not _may(request, kind):
        raise PermissionDenied
    try:
        if kind == "label":
            _change_label(request)
        else:
            _change_canned(request)
    except ValidationError as error:
        key = f"{kind}-{request.POST.get('pk') or 'new'}"
        return _page(request, errors={key: error.messages}, status=422)
    return redirect("conversations:manage")


def _change_label(request: HttpRequest) -> None:
    pk = request.POST.get("pk", "")
    label = get_object_or_404(Label, pk=pk) if pk.isdigit() else None
    if label is not None and "delete" in request.POST:
        services.delete_label(label=label)
        return
    services.save_label(
        name=request.POST.get("name", ""),
        color=request.POST.get("color", ""),
        label=label,
    )


def _change_canned(request: HttpRequest) -> None:
    pk = request.POST.get("pk", "")
    response = get_object_or_404(CannedResponse, pk=pk) if pk.isdigit() else None
    if response is not None and "delete" in request.POST:
        services.delete_canned_reply(response=response)
        return
    team_id = request.POST.get("team", "")
    team = get_object_or_404(Team, pk=team_id) if team_id.isdigit() else None
    services.save_canned_reply(
        shortcut=request.POST.get("shortcut", ""),
        title=request.POST.get("title", ""),
        text=request.POST.get("text", ""),
        team=team,
        response=response,
    )
