"""WebSocket URL routes: the live-updates endpoint (docs/LIVE.md)."""

from django.urls import path

from exchange.live.consumers import LiveConsumer

websocket_urlpatterns: list = [
    path("ws/", LiveConsumer.as_asgi()),
]
