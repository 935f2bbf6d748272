"""Reads: queries and the plain values built from them, for pages
(conversations/web/), the live socket (conversations/live/), the API and the
services.

Nothing here writes or calls a service.
"""
