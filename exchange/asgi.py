"""ASGI entry point: HTTP (API, admin, pages) and WebSocket in one server.

Signed order placement and cancels take the fast path (``orders.fastpath``);
every other HTTP request goes to Django."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "exchange.settings.base")

# Django must be set up before anything imports models (consumers do).
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from exchange.live.security import BrowserAllowedHostsOriginValidator  # noqa: E402
from exchange.routing import websocket_urlpatterns  # noqa: E402
from orders.fastpath import FastOrderEntry  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": FastOrderEntry(django_asgi_app),
        "websocket": BrowserAllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)
