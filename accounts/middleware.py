from django.utils import timezone


class AgentTimeZoneMiddleware:
    """Show and read the times of a logged-in agent's requests in the agent's
    time zone (User.time_zone); anyone else's in the server's."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated:
            timezone.activate(user.zone)
        else:
            timezone.deactivate()
        return self.get_response(request)
