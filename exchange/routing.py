"""WebSocket URL routes (the live-updates consumer is added by its own module)."""

websocket_urlpatterns: list = []
