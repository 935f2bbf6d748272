"""The agent workspace's reads: queries and the values built from them.

Nothing here writes or calls a service; pages (conversations/web/) and the
live socket (conversations/live/) read through these modules.
"""
