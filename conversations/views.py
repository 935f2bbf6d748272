from django.contrib.auth.decorators import login_required
from django.shortcuts import render

from .models import Conversation

INBOX_PAGE_SIZE = 50


@login_required
def inbox(request):
    """The conversations the agent may see, newest activity first."""
    conversations = (
        Conversation.objects.visible_to(request.user)
        .for_inbox()
        .filter(last_message_at__isnull=False)
        .order_by("-last_message_at", "-id")[:INBOX_PAGE_SIZE]
    )
    return render(request, "conversations/inbox.html", {"conversations": conversations})
