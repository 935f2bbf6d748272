"""Template filters of the routing, service-level and interactive includes."""

from django import template

from ..selectors.macros import macros_for
from ..whatsapp import payloads

register = template.Library()


@register.filter
def flow_answers(message) -> list[tuple[str, str]] | None:
    """A Flow answer's fields and values (None: the message is no Flow answer)."""
    return payloads.flow_answers(message.payload)


@register.filter
def field_label(name: str) -> str:
    """A Flow field's name as a label: "delivery_date" → "Delivery date"."""
    return str(name).replace("_", " ").strip().capitalize()


@register.simple_tag
def conversation_macros(conversation) -> list:
    """The macros offered on a conversation (its team's and everyone's)."""
    return macros_for(conversation)
