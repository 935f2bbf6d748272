"""Graph API errors in Meta's shape, with Meta's codes and HTTP statuses."""

import secrets

# code -> (HTTP status, title). Titles and statuses follow Meta's error-code
# reference of the Cloud API.
KNOWN_ERRORS = {
    0: (401, "AuthException"),
    2: (503, "Service temporarily unavailable"),
    4: (400, "Application request limit reached"),
    100: (400, "Invalid parameter"),
    190: (401, "Access token has expired"),
    368: (403, "Temporarily blocked for policies violations"),
    130429: (400, "Rate limit hit"),
    130472: (400, "User's number is part of an experiment"),
    131000: (500, "Something went wrong"),
    131005: (403, "Access denied"),
    131008: (400, "Required parameter is missing"),
    131009: (400, "Parameter value is not valid"),
    131016: (500, "Service unavailable"),
    131021: (400, "Recipient cannot be sender"),
    131026: (400, "Message undeliverable"),
    131031: (403, "Business Account locked"),
    131042: (400, "Business eligibility payment issue"),
    131047: (400, "Re-engagement message"),
    131048: (400, "Spam rate limit hit"),
    131049: (400, "Meta chose not to deliver."),
    131050: (400, "User has stopped marketing messages"),
    131051: (400, "Unsupported message type"),
    131052: (400, "Media download error"),
    131053: (400, "Media upload error"),
    131056: (400, "(Business Account, Consumer Account) pair rate limit hit"),
    131057: (500, "Business Account in maintenance mode"),
    132000: (400, "Number of parameters does not match the expected number of params"),
    132001: (404, "Template name does not exist in the translation"),
    132005: (400, "Translated text too long"),
    132007: (400, "Template Format Character Policy Violated"),
    132012: (400, "Parameter format does not match format in the created template"),
    132015: (400, "Template is Paused"),
    132016: (400, "Template is Disabled"),
    133004: (503, "Server temporarily unavailable"),
}

# Meta answers these with is_transient so clients know a retry may succeed.
TRANSIENT_CODES = {2, 4, 130429, 131000, 131016, 131056, 131057, 133004}


def fbtrace_id() -> str:
    return secrets.token_urlsafe(12)


class GraphError(Exception):
    """An error the Graph API answers with instead of a result."""

    def __init__(
        self,
        code: int,
        details: str,
        *,
        message: str | None = None,
        subcode: int | None = None,
        error_type: str = "OAuthException",
        status: int | None = None,
    ):
        known_status, title = KNOWN_ERRORS.get(code, (400, "Unknown error"))
        self.code = code
        self.title = title
        self.details = details
        self.message = message or f"(#{code}) {title}"
        self.subcode = subcode
        self.error_type = error_type
        self.status = status or known_status
        super().__init__(self.message)

    def body(self) -> dict:
        error = {
            "message": self.message,
            "type": self.error_type,
            "code": self.code,
            "error_data": {"messaging_product": "whatsapp", "details": self.details},
            "fbtrace_id": fbtrace_id(),
        }
        if self.subcode is not None:
            error["error_subcode"] = self.subcode
        if self.code in TRANSIENT_CODES:
            error["is_transient"] = True
        return {"error": error}

    def webhook_error(self) -> dict:
        """The same error as it appears in statuses[].errors of a webhook."""
        return {
            "code": self.code,
            "title": self.title,
            "message": self.title,
            "error_data": {"details": self.details},
            "href": "https://developers.facebook.com/docs/whatsapp/cloud-api/support/error-codes/",
        }


def invalid_token(details: str) -> GraphError:
    return GraphError(
        190,
        details,
        message="Invalid OAuth access token - Cannot parse access token",
        status=401,
    )


def missing_token() -> GraphError:
    return GraphError(
        190,
        "An access token is required to request this resource.",
        message="An active access token must be used to query information.",
        status=401,
    )


def unknown_object(object_id: str, method: str) -> GraphError:
    """Meta's answer for an id that does not exist or the token may not use."""
    return GraphError(
        100,
        f"Object with ID '{object_id}' does not exist.",
        message=(
            f"Unsupported {method.lower()} request. Object with ID '{object_id}' "
            "does not exist, cannot be loaded due to missing permissions, or does "
            "not support this operation."
        ),
        subcode=33,
        error_type="GraphMethodException",
    )


def invalid_parameter(details: str) -> GraphError:
    return GraphError(100, details)


def missing_parameter(details: str) -> GraphError:
    return GraphError(131008, details)
