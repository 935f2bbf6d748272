"""WebSocket routes of the agent workspace."""

from django.urls import path

from .live.consumers import WorkspaceConsumer

websocket_urlpatterns: list = [
    path("ws/workspace/", WorkspaceConsumer.as_asgi()),
]
