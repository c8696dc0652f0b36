"""Origin checking for the WebSocket endpoint.

Browsers always send ``Origin`` on a WebSocket handshake, and they attach the
session cookie whatever page opened the socket: a foreign page must be
refused (cross-site WebSocket hijacking), which ALLOWED_HOSTS does. Bots and
other non-browser clients send no ``Origin`` and no ambient cookie; channels'
AllowedHostsOriginValidator would refuse them all, so a missing Origin is
accepted here. Such a connection is anonymous unless it authenticates with a
signed AUTH message.
"""

from channels.security.websocket import OriginValidator
from django.conf import settings


class BrowserOriginValidator(OriginValidator):
    def valid_origin(self, parsed_origin):
        if parsed_origin is None:
            return True
        return super().valid_origin(parsed_origin)


def BrowserAllowedHostsOriginValidator(application):  # noqa: N802 - named like channels' own factory
    allowed_hosts = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed_hosts:
        allowed_hosts = ["localhost", "127.0.0.1", "[::1]"]
    return BrowserOriginValidator(application, allowed_hosts)
