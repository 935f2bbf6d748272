"""Meta webhook bodies written from Meta's documented shapes (tests/payloads/).

Bodies are kept as Meta sends them (non-ASCII escaped as \\uXXXX), so tests
that sign and post them hash the same bytes Meta would.
"""

import json
from pathlib import Path
from typing import Any

PAYLOADS_DIR = Path(__file__).parent / "payloads"


def payload_names() -> list[str]:
    """Return the name of every fixture, without the .json suffix."""
    return sorted(path.stem for path in PAYLOADS_DIR.glob("*.json"))


def load_payload(name: str) -> bytes:
    """Return the raw bytes of tests/payloads/<name>.json."""
    return (PAYLOADS_DIR / f"{name}.json").read_bytes()


def load_payload_json(name: str) -> dict[str, Any]:
    """Return tests/payloads/<name>.json as a dict, to alter before posting."""
    return json.loads(load_payload(name))


def dump_payload(document: dict[str, Any]) -> bytes:
    """Serialise a (possibly altered) payload the way Meta does: ASCII-escaped."""
    return json.dumps(document, ensure_ascii=True).encode()
