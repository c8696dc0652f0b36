"""The client's IP address, for IP allowlists and per-IP throttles."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def client_ip(request) -> str:
    """The address of the client, trusting exactly ``NUM_PROXIES`` proxies.

    With ``NUM_PROXIES`` = 0 (the default) only ``REMOTE_ADDR`` counts and
    ``X-Forwarded-For`` is ignored: a client could write anything there.
    Behind N trusted proxies, the N-th address from the right of
    ``X-Forwarded-For`` is the one the outermost proxy saw.
    """
    return client_ip_of(request.META.get("REMOTE_ADDR", ""), request.META.get("HTTP_X_FORWARDED_FOR"))


def client_ip_of(remote_addr: str, forwarded_for: str | None) -> str:
    """``client_ip`` from the peer's address and the X-Forwarded-For header (None if absent)."""
    num_proxies = settings.NUM_PROXIES
    if num_proxies <= 0 or not forwarded_for:
        return remote_addr
    addresses = [address.strip() for address in forwarded_for.split(",")]
    return addresses[-min(num_proxies, len(addresses))]


@lru_cache(maxsize=4096)  # addresses are immutable; a worker meets the same clients again and again
def parse_ip(text: str) -> IPAddress | None:
    """The address, with IPv4-mapped IPv6 (``::ffff:1.2.3.4``) as IPv4; None if invalid."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address
