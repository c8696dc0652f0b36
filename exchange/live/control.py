"""Closing live connections when their credentials stop being valid.

Revoking an API key, signing out, changing a password and deactivating a
user end what those credentials opened: the WebSocket connections
authenticated with them are closed by the server (code ``CLOSE_CODE``), so a
revoked key or a signed-out session stops receiving private data at once
rather than at the client's next reconnect.

Each authenticated connection joins the group ``control_group(user_id)``
(``exchange.live.consumers``); ``connections_close_on_commit`` sends one
``live.close`` message to that group after the transaction commits, naming
which of the user's connections must go: all of them, those of one session,
those of any session (a new password), or those of one API key. Best effort
like every live message: if Redis is down the connection stays open, but its
next use of the credentials fails.
"""

from __future__ import annotations

import logging

from django.db import transaction

from exchange.live.fanout import group_sender

logger = logging.getLogger(__name__)

LAYER_CLOSE = "live.close"
CLOSE_CODE = 4001  # application-defined: the credentials of this connection ended


def control_group(user_id: int) -> str:
    return f"control.{int(user_id)}"


def connections_close_on_commit(*, user_id: int, reason: str, session_key: str | None = None,
                                api_key_id: int | None = None, sessions_only: bool = False) -> None:
    """After commit, close the user's live connections: all of them, or only those of
    ``session_key`` (a session), of any session (``sessions_only``) or of ``api_key_id``
    (an API key)."""
    message = {"type": LAYER_CLOSE, "user_id": int(user_id), "reason": reason, "session_key": session_key,
               "api_key_id": api_key_id, "sessions_only": sessions_only}
    transaction.on_commit(lambda: _send(message))


def _send(message: dict) -> None:
    try:
        group_sender().send_to_groups([(control_group(message["user_id"]), message)])
    except Exception as exc:  # noqa: BLE001 - the change committed; closing is best-effort
        logger.warning("could not close live connections", extra={"user_id": message["user_id"], "error": repr(exc)})


def closes(message: dict, *, user_id: int | None, session_key: str | None, api_key_id: int | None) -> bool:
    """Whether a connection (its user, session and API key) is one ``message`` closes."""
    if user_id is None or message.get("user_id") != user_id:
        return False
    if message.get("session_key") is not None and message["session_key"] != session_key:
        return False
    if message.get("sessions_only") and (session_key is None or api_key_id is not None):
        return False
    if message.get("api_key_id") is not None and message["api_key_id"] != api_key_id:
        return False
    return True
