"""A WhatsApp Cloud API simulator: Meta's side of the conversation, offline.

The helpdesk never imports this package. It talks to the sandbox over HTTP
exactly as it talks to graph.facebook.com, and receives the sandbox's signed
webhooks exactly as it receives Meta's.
"""
