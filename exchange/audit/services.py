"""Writing audit rows: ``audit_log_record`` and where its actor, address and request id come from.

Every service that changes money, orders, markets, keys, users or settings
writes its audit row in its own transaction by calling ``audit_log_record``
(one INSERT; nothing else happens at write time: the chain and the bus
publication come after commit, see ``exchange.audit.chain``).

Where the request is known, the caller passes ``audit_context(request)``
down to the service (the services' ``audit=`` keyword); the service adds
what it knows best (the object, before and after) and, when no request was
passed (a command, a task, a test), names the actor itself with
``audit_origin``.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any, Iterable

from django.db import connection

from exchange.audit.models import AuditLog
from exchange.core.logging import request_id_var
from exchange.core.net import client_ip, parse_ip
from exchange.outbox.models import EventJSONEncoder

USER_AGENT_LENGTH_MAX = 512
ACTOR_KEYS = ("actor_user", "actor_api_key", "actor_staff", "actor_system")
# Never copied into before/after: password hashes and encrypted secrets.
SECRET_FIELDS = frozenset({"password", "secret_encrypted"})

_INSERT = """
    INSERT INTO exchange_auditlog (action, object_type, object_id, market, actor_user_id, actor_api_key_id,
                                   actor_staff_id, actor_system, subject_user_id, before, after, ip, user_agent,
                                   request_id)
    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s::jsonb, %s::inet, %s, %s)
    RETURNING id, created_at, txid::text::bigint
"""
_encoder = EventJSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _text(value, length: int) -> str:
    """Text as a column takes it: NUL characters (which PostgreSQL refuses) dropped, cut to ``length``."""
    return ("" if value is None else str(value)).replace("\x00", "")[:length]


def _json(value) -> str | None:
    """``value`` as JSON text for a jsonb column (which refuses \\u0000: NUL characters are dropped)."""
    if value is None:
        return None
    text = _encoder.encode(value)
    return _encoder.encode(_without_nul(json.loads(text))) if "\\u0000" in text else text


def _without_nul(value):
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {_without_nul(key): _without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_nul(item) for item in value]
    return value


def _pk(value) -> int | None:
    """A model instance or an id as the id (None stays None)."""
    if value is None:
        return None
    return value if isinstance(value, int) else value.pk


def audit_log_record(
    *,
    action: str,
    object_type: str,
    object_id,
    before: dict | None = None,
    after: dict | None = None,
    market: str = "",
    actor_user=None,
    actor_api_key=None,
    actor_staff=None,
    actor_system: str = "",
    ip: str = "",
    user_agent: str = "",
    request_id: str = "",
    subject_user=None,
) -> AuditLog:
    """Append one audit row in the caller's transaction (or its own, in autocommit); returns it.

    ``action`` is an UPPER_SNAKE code (``exchange.audit.actions``),
    ``object_type`` "app_label.model" and ``object_id`` the object's key.
    Users and keys may be given as instances or ids. ``subject_user``
    defaults to ``actor_user`` (a user acting on their own account). Without
    any actor the row names the running process (``current_process()``);
    without a request id, the current request's or task's
    (``exchange.core.logging.request_id_var``). Whatever a client sent is
    made storable rather than allowed to fail the caller's action: an
    address that is not an IP address is dropped, NUL characters removed,
    texts cut to their column's length.
    """
    assert action and action.isupper() and " " not in action, f"audit action {action!r} is not UPPER_SNAKE"
    assert object_type, "audit rows name the type of their object"
    if not (actor_user or actor_api_key or actor_staff or actor_system):
        actor_system = current_process()
    if subject_user is None:
        subject_user = actor_user
    address = parse_ip(ip) if ip else None
    request_id = request_id or request_id_var.get() or ""
    values = [
        action, object_type, _text(object_id, 128), _text(market, 33),
        _pk(actor_user), _pk(actor_api_key), _pk(actor_staff), _text(actor_system, 64), _pk(subject_user),
        _json(before), _json(after),
        None if address is None else str(address), _text(user_agent, USER_AGENT_LENGTH_MAX), _text(request_id, 64),
    ]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT, values)
        row_id, created_at, txid = cursor.fetchone()
    row = AuditLog(
        id=row_id, created_at=created_at, txid=txid, action=action, object_type=object_type, object_id=values[2],
        market=values[3], actor_user_id=values[4], actor_api_key_id=values[5], actor_staff_id=values[6],
        actor_system=values[7], subject_user_id=values[8], before=before, after=after, ip=values[11],
        user_agent=values[12], request_id=values[13],
    )
    row._state.adding = False
    row._state.db = connection.alias
    return row


def audit_context(request) -> dict[str, Any]:
    """The actor, address, user agent and request id of ``request`` (Django or DRF), as
    ``audit_log_record`` keywords.

    A staff member signed in with a session acts as staff (``actor_staff``):
    staff accounts are for the back office. Anyone else acts as a user, with
    the API key that signed the request if any. An anonymous request has no
    actor keys: the service names one (``audit_origin``).
    """
    from exchange.apikeys.models import ApiKey

    context: dict[str, Any] = {
        "ip": client_ip(request),
        "user_agent": request.META.get("HTTP_USER_AGENT", "")[:USER_AGENT_LENGTH_MAX],
        "request_id": getattr(request, "request_id", "") or "",
    }
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        api_key = getattr(request, "auth", None)
        api_key = api_key if isinstance(api_key, ApiKey) else None
        if user.is_staff and api_key is None:
            context["actor_staff"] = user
        else:
            context["actor_user"] = user
            context["actor_api_key"] = api_key
    return context


def audit_system(name: str) -> dict[str, Any]:
    """The context of a process acting by itself: "matcher:BTC-USDT", "manage.py load_demo"."""
    return {"actor_system": name}


def audit_origin(audit: dict[str, Any] | None, *, staff=None, user=None, api_key=None, system: str = "") -> dict:
    """The ``audit_log_record`` keywords of a service's row: the caller's context, with the actor
    the service knows (``staff``, ``user``, ``system``) when the context names none."""
    context = dict(audit or {})
    if not any(context.get(key) for key in ACTOR_KEYS):
        if staff is not None:
            context["actor_staff"] = staff
        elif user is not None:
            context.update(actor_user=user, actor_api_key=api_key)
        elif system:
            context["actor_system"] = system
    return context


def current_process() -> str:
    """What is running, as an actor: "manage.py changepassword", "celery", "pytest"."""
    argv = sys.argv or [""]
    program = os.path.basename(argv[0])
    if program == "manage.py" and len(argv) > 1:
        return f"manage.py {argv[1]}"
    if program in ("__main__.py", "-c", ""):
        return "python"
    return program or "python"


def snapshot(obj, fields: Iterable[str] | None = None) -> dict[str, Any]:
    """The concrete fields of a model instance as JSON-ready values (foreign keys as ids),
    for ``before`` and ``after``; password hashes and encrypted secrets are left out."""
    names = set(fields) if fields is not None else None
    data = {}
    for field in obj._meta.concrete_fields:
        wanted = names is None or field.name in names or field.attname in names
        if not wanted or field.name in SECRET_FIELDS or field.get_internal_type() == "BinaryField":
            continue
        data[field.attname] = getattr(obj, field.attname)
    # One encoding pass turns Decimals, datetimes and UUIDs into what the row will store.
    return json.loads(_encoder.encode(data))


def changed_fields(before: dict | None, after: dict | None) -> list[str]:
    """The keys whose values differ between two snapshots."""
    before, after = before or {}, after or {}
    return sorted(key for key in before.keys() | after.keys() if before.get(key) != after.get(key))
