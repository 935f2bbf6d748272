"""Business numbers the sandbox knows, and how they are configured."""

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

# Meta's default per-number throughput: messages per second.
DEFAULT_THROUGHPUT = 80


@dataclass
class Number:
    """A business phone number with the credentials Meta would hold for it."""

    phone_number_id: str
    display_phone_number: str
    waba_id: str
    access_token: str
    app_secret: str
    verify_token: str = ""
    verified_name: str = "Sandbox Business"
    throughput: int = DEFAULT_THROUGHPUT
    # Meta lets a number override the app's callback URL; empty means the
    # sandbox-wide webhook URL.
    webhook_url: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> "Number":
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown number settings: {', '.join(sorted(unknown))}")
        missing = [
            name
            for name in (
                "phone_number_id",
                "display_phone_number",
                "waba_id",
                "access_token",
                "app_secret",
            )
            if not data.get(name)
        ]
        if missing:
            raise ValueError(f"a number needs {', '.join(missing)}")
        values = {key: str(value) for key, value in data.items()}
        values["throughput"] = int(data.get("throughput", DEFAULT_THROUGHPUT))
        return cls(**values)

    @classmethod
    def from_option(cls, option: str) -> "Number":
        """Parse `key=value,key=value`, the form of a repeated --number option."""
        pairs = {}
        for item in option.split(","):
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"expected key=value in --number, got {item!r}")
            pairs[key.strip()] = value.strip()
        return cls.from_dict(pairs)

    def public_dict(self) -> dict:
        return asdict(self)

    @property
    def display_digits(self) -> str:
        """The display number as Meta writes it in webhooks: digits only."""
        return "".join(ch for ch in self.display_phone_number if ch.isdigit())


# Used when no number is configured, so `python -m sandbox` works out of the
# box; the run command wires the helpdesk's demo number to these values.
DEMO_NUMBER = Number(
    phone_number_id="100000000000001",
    display_phone_number="+15550100001",
    waba_id="200000000000001",
    access_token="sandbox-access-token",  # noqa: S106
    app_secret="sandbox-app-secret",  # noqa: S106
    verify_token="sandbox-verify-token",  # noqa: S106
    verified_name="Sandbox Support",
)


@dataclass
class StatusDelays:
    """Seconds after accepting a send at which each status webhook is posted.

    None leaves that status out, as for a customer with read receipts off.
    """

    sent: float | None = 0.05
    delivered: float | None = 0.15
    read: float | None = 0.3

    @classmethod
    def from_dict(cls, data: dict) -> "StatusDelays":
        unknown = set(data) - {"sent", "delivered", "read"}
        if unknown:
            raise ValueError(f"unknown statuses: {', '.join(sorted(unknown))}")
        current = asdict(cls())
        current.update(
            {
                key: None if value is None else float(value)
                for key, value in data.items()
            }
        )
        return cls(**current)


@dataclass
class SandboxConfig:
    webhook_url: str = ""
    numbers: list[Number] = field(default_factory=list)
    status_delays: StatusDelays = field(default_factory=StatusDelays)
    faults: dict = field(default_factory=dict)
    # Meta's media URLs expire after five minutes.
    media_url_ttl: float = 300.0
    # "sync": a free-form send outside the window answers 131047 at once;
    # "webhook": it is accepted and then fails by status webhook.
    window_error_mode: str = "sync"
    # How many requests and webhooks are kept for inspection.
    record_limit: int = 50_000
    # Where the sandbox keeps what Meta would remember across restarts
    # (sandbox/state.py); empty: nothing is kept.
    state_file: str = ""
    # The helpdesk's origin, for its business clock (sandbox/clock.py);
    # empty: the webhook URL's origin.
    helpdesk_url: str = ""

    @classmethod
    def from_dict(cls, data: dict) -> "SandboxConfig":
        config = cls()
        for key, value in data.items():
            if key == "numbers":
                config.numbers = [Number.from_dict(item) for item in value]
            elif key == "status_delays":
                config.status_delays = StatusDelays.from_dict(value)
            elif key in {
                "webhook_url",
                "window_error_mode",
                "state_file",
                "helpdesk_url",
            }:
                setattr(config, key, str(value))
            elif key in {"media_url_ttl"}:
                config.media_url_ttl = float(value)
            elif key == "record_limit":
                config.record_limit = int(value)
            elif key == "faults":
                config.faults = dict(value)
            else:
                raise ValueError(f"unknown sandbox setting {key!r}")
        if config.window_error_mode not in {"sync", "webhook"}:
            raise ValueError("window_error_mode must be 'sync' or 'webhook'")
        return config

    @classmethod
    def from_file(cls, path: str | Path) -> "SandboxConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
