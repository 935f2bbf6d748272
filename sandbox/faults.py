"""Faults the sandbox injects, set by config or the control API."""

import random
from dataclasses import asdict, dataclass, field, fields

TIMEOUT_MODES = ("hang", "drop")


@dataclass
class Faults:
    # Added before every Graph API answer; Meta is about 100 ms away.
    latency_ms: float = 0.0
    # Accept and record every send as it arrives, then hold its answer this
    # long (or until the faults change): a Meta slow to answer, with the send
    # already on its way.
    hold_sends_ms: float = 0.0
    # Answer HTTP 500 / code 131000 to this share of sends, or to the next N.
    server_error_rate: float = 0.0
    server_error_next: int = 0
    # Accept and record a send, then hang past the client's timeout ("hang")
    # or close the connection ("drop"); status webhooks still follow.
    timeout_after_accept_rate: float = 0.0
    timeout_after_accept_next: int = 0
    timeout_mode: str = "hang"
    hang_seconds: float = 30.0
    # Answer a Meta error code (130429, 131056, ...) to this share of valid
    # sends, or to the next sends, one code per send.
    error_rate: float = 0.0
    error_rate_code: int = 130429
    error_next: list[int] = field(default_factory=list)
    # Accept the next sends, then report them `failed` with these codes.
    failed_status_next: list[int] = field(default_factory=list)
    # Refuse the next N media uploads (131053, media upload error).
    upload_error_next: int = 0
    # Answer 130429 above each number's throughput in any wall-clock second.
    enforce_throughput: bool = True
    # Post this share of webhooks twice.
    webhook_duplicate_rate: float = 0.0
    # Post a message's statuses newest first, all at the last status's time.
    webhook_out_of_order: bool = False
    # Collect webhooks for this many ms and post them as one batched body.
    webhook_batch_ms: float = 0.0
    # Seed for the random choices, so rate-based faults can be replayed.
    seed: int | None = None

    def __post_init__(self):
        # Fault dice, not secrets: a seeded generator makes runs repeatable.
        self.random = random.Random(self.seed)  # noqa: S311

    @classmethod
    def from_dict(cls, data: dict, base: "Faults | None" = None) -> "Faults":
        """Faults from a dict; with base, only the given keys change."""
        known = {f.name: f for f in fields(cls)}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown faults: {', '.join(sorted(unknown))}")
        values = base.to_dict() if base else {}
        for key, value in data.items():
            if key in {"error_next", "failed_status_next"}:
                values[key] = _code_list(value)
            else:
                values[key] = value
        faults = cls(**values)
        if faults.timeout_mode not in TIMEOUT_MODES:
            raise ValueError(f"timeout_mode must be one of {', '.join(TIMEOUT_MODES)}")
        return faults

    def to_dict(self) -> dict:
        return asdict(self)

    def chance(self, rate: float) -> bool:
        return rate > 0 and self.random.random() < rate

    def take_server_error(self) -> bool:
        if self.server_error_next > 0:
            self.server_error_next -= 1
            return True
        return self.chance(self.server_error_rate)

    def take_error_code(self) -> int | None:
        if self.error_next:
            return self.error_next.pop(0)
        if self.chance(self.error_rate):
            return self.error_rate_code
        return None

    def take_failed_status_code(self) -> int | None:
        return self.failed_status_next.pop(0) if self.failed_status_next else None

    def take_upload_error(self) -> bool:
        if self.upload_error_next > 0:
            self.upload_error_next -= 1
            return True
        return False

    def take_timeout(self) -> bool:
        if self.timeout_after_accept_next > 0:
            self.timeout_after_accept_next -= 1
            return True
        return self.chance(self.timeout_after_accept_rate)


def _code_list(value) -> list[int]:
    """Accept [130429, ...] or {"code": 130429, "count": 3}."""
    if isinstance(value, dict):
        return [int(value["code"])] * int(value.get("count", 1))
    return [int(code) for code in value]
