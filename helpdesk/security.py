"""What the helpdesk shows of itself when something fails, and whom a
request comes from: the error reporter's filter
(DEFAULT_EXCEPTION_REPORTER_FILTER) and the client address failed logins
count against (AXES_CLIENT_IP_CALLABLE)."""

import ipaddress
import re

from django.views.debug import SafeExceptionReporterFilter

# user:password@ in a URL (postgres://, redis://, amqp://, https://...).
URL_CREDENTIALS = re.compile(r"(?P<keep>[a-z][a-z0-9+.-]*://[^/\s:@]*:)[^@\s]*@", re.I)
# password=... in a libpq connection string (psycopg's conninfo).
KEYWORD_PASSWORD = re.compile(r"(?P<keep>\bpassword\s*=\s*)('[^']*'|\S+)", re.I)


class ExceptionReporterFilter(SafeExceptionReporterFilter):
    """Django's filter, stricter: it also hides settings named like a URL or
    a DSN, masks the password of any connection string wherever it appears
    (nested settings such as CHANNEL_LAYERS and CACHES, request headers,
    frame variables), and is active with DEBUG on too.

    Django's pattern misses DATABASE_URL, REDIS_URL and CELERY_BROKER_URL,
    and with DEBUG on it leaves every frame's variables as they are, so a
    database error printed the database's password from the connection
    parameters of the frames that opened it.
    """

    hidden_settings = re.compile(
        "API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE|URL|DSN", flags=re.I
    )

    def is_active(self, request):
        return True

    def cleanse_setting(self, key, value):
        cleansed = super().cleanse_setting(key, value)
        if isinstance(cleansed, str):
            # str(): lazy strings (django-axes has one) pass isinstance only.
            return self.mask_credentials(str(cleansed))
        return cleansed

    def mask_credentials(self, text: str) -> str:
        text = URL_CREDENTIALS.sub(rf"\g<keep>{self.cleansed_substitute}@", text)
        return KEYWORD_PASSWORD.sub(rf"\g<keep>{self.cleansed_substitute}", text)

    def get_traceback_frame_variables(self, request, tb_frame):
        return [
            (name, self.cleanse_setting(name, value))
            for name, value in super().get_traceback_frame_variables(request, tb_frame)
        ]


def client_ip_address(request) -> str | None:
    """The address failed logins are counted against.

    REMOTE_ADDR only: behind the load balancer the ASGI server has already
    put the client's address there from the forwarded headers of the one
    proxy it trusts (uvicorn --proxy-headers --forwarded-allow-ips, see
    helpdesk/processes.py). A header read here instead would be the
    client's to choose, and each made-up address a fresh set of attempts.
    An IPv6 client counts by its /64, the block one subscriber is given.
    """
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return None
    if address.version == 6 and address.ipv4_mapped is not None:
        return str(address.ipv4_mapped)
    if address.version == 6:
        return str(ipaddress.ip_network((address, 64), strict=False).network_address)
    return str(address)
