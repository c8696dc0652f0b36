"""The request being served, for audit hooks that Django calls without one (``passwords``).

Services get the request's context explicitly (``audit=audit_context(request)``);
this is only for the few callbacks inside Django itself that receive no
request. A context variable, so it follows the request into the thread
that runs the view under ASGI.
"""

from __future__ import annotations

import contextvars

_request: contextvars.ContextVar = contextvars.ContextVar("audit_request", default=None)


def current_request():
    """The request being served in this context, or None (a command, a task)."""
    return _request.get()


class CurrentRequestMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        token = _request.set(request)
        try:
            return self.get_response(request)
        finally:
            _request.reset(token)
