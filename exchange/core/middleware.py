"""Request ids: one id follows a request through logs, responses and events."""

from __future__ import annotations

import re
import uuid

from exchange.core.logging import request_id_var

_VALID_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def valid_request_id(supplied: str) -> bool:
    """Whether a caller's ``X-Request-ID`` may be used as is (else one is made)."""
    return bool(_VALID_ID.match(supplied))


class RequestIdMiddleware:
    """Use the caller's ``X-Request-ID`` when it is sane, else make one."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        supplied = request.headers.get("X-Request-ID", "")
        request_id = supplied if valid_request_id(supplied) else uuid.uuid4().hex
        request.request_id = request_id
        token = request_id_var.set(request_id)
        try:
            response = self.get_response(request)
        finally:
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response
