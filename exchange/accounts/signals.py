"""Signing out closes the session's live connections (exchange.live.control).

Connected in ``ExchangeConfig.ready``; Django sends ``user_logged_out`` from
``logout()`` (the API's and the back office's) before the session is flushed,
so its key still names the connections to close.
"""

from __future__ import annotations

from django.contrib.auth.signals import user_logged_out
from django.dispatch import receiver

from exchange.live.control import connections_close_on_commit


@receiver(user_logged_out, dispatch_uid="exchange.accounts.logout_closes_connections")
def _logged_out(sender, request, user, **kwargs):
    session = getattr(request, "session", None) if request is not None else None
    if user is None or session is None or session.session_key is None:
        return
    connections_close_on_commit(user_id=user.pk, session_key=session.session_key, reason="signed out")
