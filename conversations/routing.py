"""WebSocket routes of the agent workspace."""

websocket_urlpatterns: list = []
