"""Filters of the reports page: figures as people read them."""

from django import template

from ..web import charts

register = template.Library()


@register.filter
def report_figure(value, kind: str) -> str:
    """A report cell in its kind's format ("1 m 39 s", "0.1587", "1,204")."""
    return charts.figure(value, kind)


@register.filter
def duration(seconds) -> str:
    """Seconds as "1 m 39 s"."""
    return charts.human_duration(seconds)


@register.filter
def amount(value) -> str:
    return charts.money(value)
