"""Canned replies' placeholders and shortcuts: pure rules, no I/O.

A canned reply's text may name the open conversation's customer, agent and
number with placeholders, written `{{customer_name}}` as agents know them
from other tools (`{customer_name}`, the older single-brace form, works the
same). Only the names below are known: the admin and the workspace refuse a
text with any other, so a reply never reaches a customer with braces in it.
"""

import re

# name: what it is filled with (said in the admin's help and its errors).
PLACEHOLDERS = {
    "customer_name": "the customer's name",
    "first_name": "the customer's first name",
    "agent_name": "the agent's name",
    "number_name": "the WhatsApp number's name",
}

# {{ name }} or {name}; the name is anything up to the closing brace, so an
# unknown or misspelt one is found (and refused) too.
_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}|\{\s*([^{}]*?)\s*\}")

# What follows "/" in the composer (a SlugField's characters).
SHORTCUT = re.compile(r"^/([-\w]+)$")


def placeholders_help() -> str:
    return ", ".join(
        f"{{{{{name}}}}} ({meaning})" for name, meaning in PLACEHOLDERS.items()
    )


def unknown_placeholders(text: str) -> list[str]:
    """The placeholders of `text` that are not known, in order, once each."""
    found = []
    for match in _PLACEHOLDER.finditer(text):
        name = match.group(1) if match.group(1) is not None else match.group(2)
        if name not in PLACEHOLDERS and name not in found:
            found.append(name)
    return found


def fill(text: str, values: dict[str, str]) -> str:
    """The text with every known placeholder replaced by its value."""

    def replace(match: re.Match) -> str:
        name = match.group(1) if match.group(1) is not None else match.group(2)
        return values.get(name, match.group(0))

    return _PLACEHOLDER.sub(replace, text)


def first_name(name: str) -> str:
    """The first word of a name ("Anna Schmidt" → "Anna"); a number stays whole."""
    words = name.split()
    return words[0] if words else ""


def shortcut_of(text: str) -> str:
    """The shortcut a message consists of ("/where-is-order" → "where-is-order"),
    or "" when the message is anything more or less."""
    match = SHORTCUT.match(text.strip())
    return match.group(1) if match else ""
