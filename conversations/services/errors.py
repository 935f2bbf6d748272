"""Domain errors of the services: a stable code and a readable text, no HTTP.

What a code means over HTTP is said once, in conversations/api/exceptions.py
(HTTP_STATUS), for the REST API and the workspace's htmx answers alike.
"""


class MediaTemporarilyUnavailable(Exception):
    """Meta could not be reached or asked to try later; the task retries."""


class ServiceError(Exception):
    """An action the rules refuse: `code` is stable for machines, `detail`
    readable by people, `extra` what helps to act on it (as JSON values)."""

    code = "refused"

    def __init__(self, detail: str, *, code: str | None = None, **extra):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.extra = extra


class WorkspaceError(ServiceError):
    """An agent's action on a conversation the rules refuse."""

    def __init__(self, code: str, message: str):
        super().__init__(message, code=code)

    @property
    def message(self) -> str:
        return self.detail


class AssigneeNotAllowed(WorkspaceError):
    """An assignee who is unknown, inactive or may not see the conversation's
    number: one answer for all, so a guessed id reveals nobody's name."""

    def __init__(self):
        super().__init__(
            "assignee_not_allowed", "No agent with that id can take this conversation."
        )


class TeamNotAllowed(WorkspaceError):
    """A team that is unknown or does not work on the conversation's number:
    one answer for both, so a guessed id reveals no team's name."""

    def __init__(self):
        super().__init__(
            "team_not_allowed", "No team with that id works on this number."
        )


class OutboundError(ServiceError):
    """A send refused before any request to Meta."""

    code = "invalid_message"


class WindowClosed(OutboundError):
    code = "window_closed"


class TemplateNotApproved(OutboundError):
    code = "template_not_approved"


class TemplateParametersInvalid(OutboundError):
    code = "template_parameters"


class MediaRefused(OutboundError):
    code = "media_refused"


class NothingToMark(OutboundError):
    code = "nothing_to_mark"


class SendingPaused(OutboundError):
    code = "sending_paused"


class UploadFailed(OutboundError):
    code = "upload_failed"


class NoConsent(OutboundError):
    code = "no_consent"


class TemplateCategoryMismatch(OutboundError):
    code = "template_category_mismatch"


class InvalidRecipient(OutboundError):
    code = "invalid_phone"


class PhoneRequired(OutboundError):
    """Meta sends one-tap, zero-tap and copy-code authentication templates
    only to a phone number, never to a business-scoped user id alone."""

    code = "phone_required"


class GroupConversation(OutboundError):
    code = "group_conversation"
