"""The fast path of order entry: signed POST and DELETE on /api/v1/orders, natively async.

Why it exists: under Django's ASGI handler every request crosses the
synchronous middleware and view in worker threads, and DRF builds its
serializers anew; that alone costs more CPU per request than the whole
order path is allowed. This ASGI handler serves the hottest endpoints for
API-key-signed requests without leaving the event loop:

- ``POST /api/v1/orders`` (place), ``DELETE /api/v1/orders/{id}`` (cancel),
  ``DELETE /api/v1/orders?market=`` (cancel all);
- per placed order: one Redis round trip before the database (the change
  token of the per-process caches, the market's heartbeat with its reference
  prices, the admission script: failed-attempt limits, replay, every rate
  limit; and the pre-trade risk reservation), one PostgreSQL statement
  (``orders_order_place``: hold, order, events, audit row; several orders
  share one when the worker is busy, ``orders.batching``), one Redis round
  trip after commit (the stream command).

The contract is the Django views' (``orders/api/views.py``), which stay the
reference and serve everything this path does not take: the same checks in
the same order (``exchange.apikeys.credentials``, the views' input
serializers, or ``PlainInput`` for the bodies they would take unchanged,
``orders.rules`` through ``orders.entry``), errors rendered by
the same exception handler, the same bodies and headers.
``tests/orders/test_fastpath.py`` sends a corpus of requests to both doors
and compares the answers.

What this path takes: the method and path above, an ``X-API-KEY`` header,
and for POST a ``Content-Type`` of ``application/json`` and a
``Content-Length`` of at most 64 KiB. Anything else goes to Django.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
import uuid
from dataclasses import dataclass, field
from decimal import Decimal

import asyncpg
import orjson
from django.conf import settings
from django.core.validators import MaxLengthValidator, MinLengthValidator, ProhibitNullCharactersValidator
from django.http import Http404, QueryDict
from django.utils import timezone
from rest_framework import exceptions, serializers
from rest_framework.exceptions import ValidationError
from rest_framework.fields import CharField, ChoiceField, empty
from rest_framework.validators import ProhibitSurrogateCharactersValidator

from exchange.apikeys import credentials as creds
from exchange.apikeys.models import TRADE
from exchange.core import aio, localcache
from exchange.core.errors import ApplicationError, ServiceUnavailable, api_exception_handler
from exchange.core.fields import AmountField, StrictCharField
from exchange.core.middleware import valid_request_id
from exchange.core.net import client_ip_of
from exchange.core.parsers import parse_json_body
from exchange.core.resp import ReplyError
from exchange.core.config import redis_db_of
from exchange.core.throttling import ADMISSION_LUA, ADMITTED, REPLAYED, Admission, auth_failure_record, request_scopes
from exchange.live import protocol
from exchange.models import Market
from exchange.selectors import market_get_cached, market_peek
from matching import stream
from orders import batching, entry
from orders.representations import order_representation
from orders.rules import OrderRequest, Reference
from risk import counters as risk_counters, limits as risk_limits, pretrade
from wallet.fees import fee_rates_cached, fee_rates_peek

logger = logging.getLogger(__name__)

ORDERS_PATH = "/api/v1/orders"
_DETAIL_PATH = re.compile(r"/api/v1/orders/([0-9]+)")
BODY_MAX = 64 * 1024
AUTH_HEADER = 'ApiKey realm="api"'

# Headers Django's middleware and DRF put on these views' responses (the
# differential test checks them).
_COMMON_HEADERS = [
    (b"content-type", b"application/json"),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
]
_allow: dict[str, bytes] = {}


def _allow_header(kind: str) -> bytes:
    """DRF's ``Allow`` header of the view this request would have reached."""
    if not _allow:
        from orders.api.views import OrderCollectionApi, OrderDetailApi

        for kind, view_class in (("collection", OrderCollectionApi), ("detail", OrderDetailApi)):
            view = view_class()
            view.setup(None)  # as a request would (Django adds HEAD for views with GET)
            _allow[kind] = ", ".join(view.allowed_methods).encode()
    return _allow["detail" if kind == "cancel" else "collection"]

# Whether the user has a live WebSocket connection: members of their private
# group in the channel layer's database (channels-redis scores members with
# the time they joined and drops them after its group expiry), asked in the
# same pipeline; SELECT in a script does not change the connection's database.
_LIVE_LUA = """
redis.call('SELECT', ARGV[1])
return redis.call('ZCOUNT', ARGV[2], ARGV[3], '+inf')
"""


@dataclass
class _Request:
    method: str
    path: str
    query_string: str
    headers: dict[str, str]
    client_ip: str
    kind: str  # "place", "cancel", "cancel_all"
    order_id: int | None = None
    body: bytes = b""
    request_id: str = ""
    started: float = field(default_factory=time.perf_counter)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _route(scope) -> _Request | None:
    """The request if this path serves it, else None (Django does)."""
    method = scope["method"]
    path = scope["path"]
    if path == ORDERS_PATH:
        if method == "POST":
            kind = "place"
        elif method == "DELETE":
            kind = "cancel_all"
        else:
            return None
        order_id = None
    elif method == "DELETE" and (match := _DETAIL_PATH.fullmatch(path)):
        kind, order_id = "cancel", int(match.group(1))
    else:
        return None
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        if name in headers:
            return None  # a repeated header: Django's rules for joining them apply
        headers[name] = raw_value.decode("latin-1")
    if "x-api-key" not in headers:
        return None
    if kind == "place":
        content_type = headers.get("content-type", "").split(";")[0].strip().lower()
        length = headers.get("content-length")
        if content_type != "application/json" or length is None or not length.isdigit() or int(length) > BODY_MAX:
            return None
    try:
        query_string = scope.get("query_string", b"").decode()
    except UnicodeDecodeError:
        return None
    client = scope.get("client") or ("", 0)
    return _Request(method, path, query_string, headers, client_ip_of(client[0] or "", headers.get("x-forwarded-for")),
                    kind, order_id)


class FastOrderEntry:
    """ASGI application: the endpoints above for signed requests; ``fallback`` serves the rest."""

    def __init__(self, fallback):
        self.fallback = fallback

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            request = _route(scope)
            if request is not None:
                await self._serve(request, receive, send)
                return
        await self.fallback(scope, receive, send)

    async def _serve(self, request: _Request, receive, send) -> None:
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request.body = bytes(body)
        supplied = request.header("x-request-id") or ""
        request.request_id = supplied if valid_request_id(supplied) else uuid.uuid4().hex
        try:
            handler = {"place": _place, "cancel": _cancel, "cancel_all": _cancel_all}[request.kind]
            status, data, headers = await handler(request)
        except Exception as exc:  # noqa: BLE001 - rendered as the API renders it
            status, data, headers = _error_response(request, exc)
        await _send(send, request, status, data, headers)


async def _send(send, request: _Request, status: int, data, headers: list) -> None:
    payload = orjson.dumps(data).replace(b"\xe2\x80\xa8", b"\\u2028").replace(b"\xe2\x80\xa9", b"\\u2029")
    response_headers = [
        *_COMMON_HEADERS,
        (b"content-length", str(len(payload)).encode()),
        (b"allow", _allow_header(request.kind)),
        (b"x-request-id", request.request_id.encode()),
        *headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})


def _error_response(request: _Request, exc: Exception) -> tuple[int, dict, list]:
    if isinstance(exc, (creds.ApiKeyAuthenticationFailed, exceptions.NotAuthenticated)):
        exc.auth_header = AUTH_HEADER
    if isinstance(exc, (OSError, TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError)):
        logger.error("dependency unavailable: %s", exc)
        exc = ServiceUnavailable()
    response = api_exception_handler(exc, {})
    if response is None:
        logger.error("order entry failed", exc_info=exc, extra={"request_id": request.request_id})
        body = {"code": "INTERNAL_ERROR", "message": "Internal error; it has been logged.", "field": None,
                "request_id": request.request_id}
        return 500, body, []
    headers = [(name.lower().encode(), value.encode()) for name, value in response.items()
               if name.lower() not in ("content-type", "allow", "vary")]
    if response.status_code >= 400:
        logger.warning("%s: %s", "Bad Request" if response.status_code == 400 else response.reason_phrase, request.path,
                       extra={"status_code": response.status_code, "request_id": request.request_id})
    return response.status_code, response.data, headers


# ----------------------------------------------------------------- steps


@dataclass
class _Admitted:
    credentials: creds.Credentials
    heartbeat: bytes | None  # the market's heartbeat, when asked for
    live: bool  # whether the user has a live WebSocket connection, when asked for
    caches_dropped: bool  # the per-process caches were dropped while the request was in flight
    extra: list = field(default_factory=list)  # the replies to the caller's own commands


async def _admit(request: _Request, *, symbol: str | None = None, live: bool = False, extra=None) -> _Admitted:
    """Authentication, the key's permission and admission (replay, rate limits), in DRF's order,
    plus what else the request needs from Redis, in one round trip: ``extra(credentials)`` may
    add commands of the caller's (once the key is known to be good), whose replies come back
    in ``_Admitted.extra``."""
    key_id = request.header("x-api-key")
    try:
        headers = creds.parse_headers(request.header, query_string=request.query_string)
        credentials = creds.credentials_cached(headers.key_id) or await aio.in_thread(
            creds.credentials_get, headers.key_id)
        if credentials is None:
            raise creds.unknown_key()
        creds.check_signature(credentials, headers, method=request.method, path=request.path,
                              query_string=request.query_string, body=request.body)
        creds.check_state(credentials, client_ip=request.client_ip, now=timezone.now())
        denied = _permission_error(credentials)
        admission = (Admission().check_failures(ip=request.client_ip, key_id=key_id)
                     .check_replay(headers.signature, creds.replay_ttl_ms(headers)))
        if denied is None:  # DRF counts rate limits only once the permission check passed
            for scope in request_scopes(authenticated=True, view_scope="orders"):
                admission.count(scope, f"key:{credentials.pk}")
        seen = localcache.current_token()
        own = await extra(credentials) if extra is not None and denied is None else []
        status, wait_s, heartbeat, live_members, own_replies = await _pipeline(
            admission, symbol=symbol, live_user_id=credentials.user_id if live else None, extra=own)
        if status == REPLAYED:
            raise creds.replayed()
        if status != ADMITTED:
            raise exceptions.Throttled(wait_s)
        caches_dropped = localcache.current_token() != seen
        if caches_dropped:  # check the key again, fresh
            credentials = await aio.in_thread(creds.credentials_get, headers.key_id)
            if credentials is None:
                raise creds.unknown_key()
            creds.check_state(credentials, client_ip=request.client_ip, now=timezone.now())
            denied = _permission_error(credentials)
    except creds.ApiKeyAuthenticationFailed:
        wait_s = await aio.in_thread(auth_failure_record, ip=request.client_ip, key_id=key_id)
        if wait_s is not None:
            raise exceptions.Throttled(wait_s) from None
        raise
    if denied is not None:
        raise denied
    return _Admitted(credentials, heartbeat, live_members > 0, caches_dropped, own_replies)


def _permission_error(credentials: creds.Credentials) -> exceptions.PermissionDenied | None:
    if credentials.has_permission(TRADE):
        return None
    return exceptions.PermissionDenied("This API key lacks the 'trade' permission.", code="API_KEY_PERMISSION_DENIED")


async def _pipeline(admission: Admission, *, symbol: str | None, live_user_id: int | None, extra: list):
    """(admission status, seconds to wait, the heartbeat or None, live connections, the replies to
    ``extra``) in one round trip; the change token read on the way drops the caches if it moved."""
    keys, args = admission.keys_and_args()
    commands = [("GET", localcache.VERSION_KEY), _script_command(ADMISSION_LUA, keys, args)]
    if symbol is not None:
        commands.append(("GET", stream.heartbeat_key(symbol)))
    if live_user_id is not None:
        commands.append(_script_command(_LIVE_LUA, [], [
            _channels_db(), f"asgi:group:{protocol.user_group(live_user_id)}", int(time.time()) - 86400]))
    first_extra = len(commands)
    commands += extra
    replies = await _execute(commands)
    localcache.observe(replies[0])
    status, wait_s = Admission.verdict(replies[1])
    heartbeat = replies[2] if symbol is not None else None
    live = int(replies[first_extra - 1]) if live_user_id is not None else 0
    return status, wait_s, heartbeat, live, replies[first_extra:]


_SCRIPTS: dict[str, str] = {}


def _script_command(script: str, keys: list, args: list) -> tuple:
    """EVALSHA of ``script`` (its text is kept, to load it if Redis does not know it)."""
    sha = _SHAS.get(script)
    if sha is None:
        sha = _SHAS[script] = hashlib.sha1(script.encode()).hexdigest()
        _SCRIPTS[sha] = script
    return ("EVALSHA", sha, len(keys), *keys, *args)


_SHAS: dict[str, str] = {}


async def _execute(commands: list[tuple]) -> list:
    """Send ``commands`` in one pipeline. A script Redis does not know (it restarted) is loaded
    and that command alone sent again: a script either ran whole or not at all."""
    client = aio.redis_client()
    replies = await client.execute(commands)
    for index, reply in enumerate(replies):
        if isinstance(reply, ReplyError):
            if not str(reply).startswith("NOSCRIPT"):
                raise RuntimeError(f"Redis refused {commands[index][0]}: {reply}")
            script = _SCRIPTS[commands[index][1]]
            [loaded, replies[index]] = await client.execute([("SCRIPT", "LOAD", script), commands[index]])
            if isinstance(replies[index], ReplyError):
                raise RuntimeError(f"Redis refused {commands[index][0]}: {replies[index]}")
    return replies


def _channels_db() -> int:
    return redis_db_of(settings.REDIS_CHANNELS_URL)


# Printable ASCII without spaces: nothing a CharField would trim, and nothing its validators
# (length aside) or a blank check would refuse.
_PLAIN_TEXT = re.compile(r"[!-~]+")
_TEXT_VALIDATORS = (MaxLengthValidator, MinLengthValidator, ProhibitNullCharactersValidator,
                    ProhibitSurrogateCharactersValidator)


def _plain_field(field):
    """How ``PlainInput`` takes one field: a function of the JSON value that returns what the
    field's ``run_validation`` would, or None where the field must decide (its error included);
    None if this field has checks ``PlainInput`` does not know."""
    if field.default is not empty or field.source_attrs != [field.field_name]:
        return None
    if type(field) is ChoiceField and not field.validators:
        values = {text: value for text, value in field.choice_strings_to_values.items() if text}
        return lambda data: values.get(data) if type(data) is str else None
    if type(field) is AmountField and not field.validators:
        def amount(data):
            if type(data) is not str:
                return None
            try:
                return field.to_internal_value(data)
            except ValidationError:
                return None
        return amount
    if type(field) in (CharField, StrictCharField) and all(isinstance(v, _TEXT_VALIDATORS) for v in field.validators):
        shortest, longest = max(field.min_length or 1, 1), field.max_length or BODY_MAX
        return lambda data: (data if type(data) is str and shortest <= len(data) <= longest
                             and _PLAIN_TEXT.fullmatch(data) else None)
    return None


class PlainInput:
    """An input serializer's answer for the bodies nearly every client sends, without DRF's
    machinery (it took about a sixth of a web worker's CPU per placement: docs/BENCHMARKS.md,
    "A slow VM, stale plans and where PostgreSQL's time goes").

    A body is taken here only if each of its fields is known, the required ones are present,
    and each value is a JSON string the field takes as it is: one of a choice field's
    choices, printable ASCII without spaces within a text field's lengths, an amount that
    the field's own ``to_internal_value`` accepts. The result is then what the serializer's
    ``run_validation`` returns (``tests/orders/test_plain_input.py`` compares the two on
    generated bodies). For anything else ``take`` returns None and the serializer decides,
    errors included: it stays the contract. A serializer with a check this class does not
    know (a ``validate`` method, a field type or validator it does not model) is never
    bypassed: ``of`` returns None.
    """

    def __init__(self, fields: dict, required: frozenset):
        self.fields, self.required = fields, required

    @classmethod
    def of(cls, serializer) -> "PlainInput | None":
        if type(serializer).validate is not serializers.Serializer.validate or serializer.validators:
            return None
        fields = {}
        for name, declared in serializer.fields.items():
            take = None if declared.read_only or hasattr(serializer, "validate_" + name) else _plain_field(declared)
            if take is None:
                return None
            fields[name] = take
        return cls(fields, frozenset(name for name, declared in serializer.fields.items() if declared.required))

    def take(self, data) -> dict | None:
        if type(data) is not dict or not self.required <= data.keys() or not data.keys() <= self.fields.keys():
            return None
        validated = {}
        for name, take in self.fields.items():
            if name in data:
                value = take(data[name])
                if value is None:
                    return None
                validated[name] = value
        return validated


_inputs: dict[str, tuple] = {}


def _validated(name: str, data) -> dict:
    """What the view's input serializer ``name`` makes of ``data`` (its ``run_validation``):
    by ``PlainInput`` when it can, else by one instance per process of the serializer (what
    the view does, without building a serializer per request)."""
    if name not in _inputs:
        from orders.api.views import OrderCollectionApi, OrderPlaceInput

        serializer = {"place": OrderPlaceInput, "cancel_all": OrderCollectionApi.CancelAllInput}[name]()
        _inputs[name] = (serializer, PlainInput.of(serializer))
    serializer, plain = _inputs[name]
    validated = plain.take(data) if plain is not None else None
    return validated if validated is not None else serializer.run_validation(data)


def _parse_place(request: _Request) -> tuple[dict | None, Exception | None]:
    """The validated input of a placement, or the error the view would raise for it: raised
    later, in the view's place (after authentication, permission and rate limits)."""
    try:
        return _validated("place", parse_json_body(request.body)), None
    except (ValidationError, exceptions.ParseError) as exc:
        return None, exc


def _market_sync(symbol: str) -> Market | None:
    try:
        return market_get_cached(symbol=symbol)
    except Http404:
        return None


# The last heartbeat this process read of each market, and when (monotonic): a placement
# that arrives while it is recent is checked against it before its Redis round trip, so
# that its risk reservation can ride in that round trip; the heartbeat the round trip
# reads then checks it again (a busy worker reads one per order, so it is milliseconds old).
PULSE_REUSE_S = 0.5
_pulses: dict[str, tuple[float, stream.Pulse | None]] = {}


@dataclass
class _Risk:
    """The pre-trade check of one placement, planned before the pipeline when it can be."""

    plan: object = None
    reservation: object = None
    prepared: object = None  # (entry.Prepared, Reference) the early plan was made from

    async def release(self) -> None:
        """Give back what was reserved (the order was not accepted after all)."""
        reservation, self.reservation = self.reservation, None
        if reservation is None or reservation.release_script is None:
            return
        try:
            await _execute([_script_command(reservation.release_script, reservation.release_keys,
                                            reservation.release_args)])
        except (OSError, TimeoutError, RuntimeError):
            logger.error("a risk reservation could not be given back; the counters' reconciliation will",
                         exc_info=True)


async def _place(request: _Request):
    fields, invalid = _parse_place(request)
    market, order_request, symbol = None, None, ""
    if fields is not None:
        fields = dict(fields)
        symbol = fields.pop("market")
        market = await _market_for(symbol)
        order_request = OrderRequest(**fields)
    generated_id = uuid.uuid4().hex  # the order's client_order_id if the request has none
    risk = _Risk()

    async def plan_early(credentials) -> list:
        """The risk reservation, for the pipeline, when this process has a recent pulse."""
        if market is None or order_request is None:
            return []
        seen = _pulses.get(market.symbol)
        if seen is None or time.monotonic() - seen[0] > PULSE_REUSE_S:
            return []
        try:
            prepared, reference = await _prepare(request, credentials, market, order_request, seen[1], generated_id)
            risk.plan = await _risk_plan(credentials, market, prepared, reference)
        except ApplicationError:
            return []  # the checks run again, fresh, once the round trip is back
        risk.prepared = prepared, reference
        return [_script_command(risk.plan.script, risk.plan.keys, risk.plan.args)]

    admitted = await _admit(request, symbol=market.symbol if market is not None else None, live=True,
                            extra=plan_early)
    try:
        if invalid is not None:
            raise invalid
        if market is None:
            raise ApplicationError("UNKNOWN_MARKET", f"There is no market {str(symbol)[:40]!r}.", field="market")
        if admitted.caches_dropped:
            market = await _market_for(market.symbol)
        pulse = stream.pulse_parse(admitted.heartbeat)
        _pulses[market.symbol] = (time.monotonic(), pulse)
        credentials = admitted.credentials
        early_reply = admitted.extra[0] if admitted.extra else None
        try:
            if _keep_early(risk, market, pulse, early_reply, admitted.caches_dropped):
                prepared = risk.prepared[0]
            else:
                prepared, reference = await _prepare(request, credentials, market, order_request, pulse,
                                                     generated_id)
                await _reserve(risk, credentials, market, prepared, reference, early_reply, admitted.caches_dropped)
        except ApplicationError:
            await risk.release()
            # A retry of an order accepted earlier gets that order, whatever changed since.
            existing = await _existing(credentials.user_id, order_request)
            if existing is None:
                raise
            return 200, _render(entry.existing_outcome(existing, order_request, market), market), []
        outcome = entry.placement_outcome(prepared, await batching.batcher().place(prepared.params))
    except BaseException:
        await risk.release()
        raise
    if not outcome.created:
        await risk.release()
        return 200, _render(outcome.order, market), []
    order_id = outcome.order["id"]
    if admitted.live:  # the PENDING order before the matcher's first message about it
        await aio.in_thread(_live_order_accepted, order_id, credentials.user_id)
    await _after_commit(market.symbol, stream.NEW, order_id)
    return 201, _render(outcome.order, market), []


def _keep_early(risk: _Risk, market: Market, pulse: stream.Pulse | None, early_reply, caches_dropped: bool) -> bool:
    """Keeps the order prepared before the round trip, and takes the reservation made in it,
    when they stand as they are (returns whether it did): the fresh heartbeat gives the same reference prices and a live matcher, and no
    configuration changed meanwhile (the same inputs give the same checks and plan). Otherwise
    the order is prepared and checked again from the fresh heartbeat."""
    if risk.prepared is None or early_reply is None or caches_dropped:
        return False
    if entry.reference_of(pulse) != risk.prepared[1]:
        return False
    entry.require_matcher(market, pulse)
    try:
        risk.reservation = risk.plan.verdict(early_reply)  # or its refusal: nothing was reserved
    except pretrade.CountersCold:
        return False
    return True


async def _prepare(request: _Request, credentials, market: Market, order_request: OrderRequest,
                   pulse: stream.Pulse | None, generated_id: str) -> tuple[entry.Prepared, Reference]:
    """The market's rules (``entry.placement_prepare``) with the reference of ``pulse``; and that reference."""
    reference = entry.reference_of(pulse, last_price_fallback=await _last_price(market) if pulse is None else None)
    prepared = entry.placement_prepare(
        user_id=credentials.user_id, market=market, request=order_request, reference=reference, pulse=pulse,
        fees=await _fee_rates(credentials.user_id, market), origin=_origin(request, credentials),
        client_order_id=generated_id)
    return prepared, reference


async def _warm_risk(user_id: int) -> None:
    """Load what a pre-trade check of ``user_id`` reads, off the event loop. On return the
    caches hold it, and nothing drops them before the caller's next ``await``: they are
    dropped only on the loop (another request observing a new configuration token), so
    one dropped while a thread was loading them is loaded again, never read on the loop."""
    while not risk_limits.cached(user_id):
        await aio.in_thread(risk_limits.warm, user_id)


async def _risk_plan(credentials, market: Market, prepared: entry.Prepared, reference: Reference):
    """The pre-trade check's plan (``risk.pretrade.placement_plan``); raises its static refusals."""
    await _warm_risk(credentials.user_id)
    return pretrade.placement_plan(
        user_id=credentials.user_id, kyc_tier=risk_limits.kyc_tier(credentials.user_id), market=market,
        order=prepared.checked, reference=reference, client_order_id=prepared.client_order_id,
        now_ms=time.time_ns() // 1_000_000)


async def _reserve(risk: _Risk, credentials, market: Market, prepared: entry.Prepared, reference: Reference,
                   early_reply, caches_dropped: bool) -> None:
    """The pre-trade check against the fresh pulse (its static refusals first). The reservation
    made in the pipeline stands when the fresh check plans exactly the same; otherwise what it
    reserved is given back and the check runs again on its own (a worker that was idle, a
    market that moved, limits that changed meanwhile)."""
    fresh = await _risk_plan(credentials, market, prepared, reference)
    early = risk.plan if early_reply is not None else None
    if early is not None:
        if not caches_dropped and fresh.args == early.args:
            try:
                risk.reservation = early.verdict(early_reply)  # or its refusal: nothing was reserved
                return
            except pretrade.CountersCold:
                pass
        elif int(early_reply[0]) == 0:  # it reserved: give that back
            risk.reservation = early.verdict(early_reply)
            await risk.release()
    risk.plan = fresh
    for attempt in (1, 2):
        [reply] = await _execute([_script_command(fresh.script, fresh.keys, fresh.args)])
        try:
            risk.reservation = fresh.verdict(reply)
            return
        except pretrade.CountersCold:
            if attempt == 2:
                raise
            await aio.in_thread(risk_counters.counters_rebuild, user_id=credentials.user_id)


async def _market_for(symbol: str) -> Market | None:
    """The market named ``symbol`` from this process's cache (the ORM in a thread on a miss); None if none."""
    return market_peek(symbol=symbol) or await aio.in_thread(_market_sync, symbol)


def _origin(request: _Request, credentials: creds.Credentials) -> entry.Origin:
    """Who asks, for the order and its audit row (as ``audit_context`` says for the Django door)."""
    return entry.Origin.clean(ip=request.client_ip, api_key_id=credentials.pk,
                              user_agent=request.header("user-agent") or "", request_id=request.request_id)


def _render(row: dict, market: Market) -> dict:
    return order_representation(row, symbol=market.symbol, base_code=market.base.code, quote_code=market.quote.code)


async def _fee_rates(user_id: int, market: Market):
    rates = fee_rates_peek(user_id=user_id, market=market)
    if rates is None:
        from django.contrib.auth import get_user_model

        rates = await aio.in_thread(fee_rates_cached, user=get_user_model()(pk=user_id), market=market)
    return rates


async def _last_price(market: Market) -> Decimal | None:
    row = await aio.fetch_one("SELECT last_price FROM matching_marketstate WHERE market_id = %s", market.id)
    return None if row is None else row["last_price"]


async def _existing(user_id: int, request: OrderRequest) -> dict | None:
    if not request.client_order_id:
        return None
    return await aio.fetch_one("SELECT * FROM orders_order WHERE user_id = %s AND client_order_id = %s",
                               user_id, request.client_order_id)


def _live_order_accepted(order_id: int, user_id: int) -> None:
    from exchange.live.publish import order_accepted_publish

    order_accepted_publish(order_id, user_id)


async def _after_commit(symbol: str, kind: str, row_id: int) -> None:
    """The stream command. If Redis fails the command is not lost (its row is committed; the
    matcher's sweep finds it). The outbox relay needs no wake-up: it polls."""
    fields = stream.command_fields(kind, row_id)
    try:
        await aio.redis_client().execute(
            [("XADD", stream.stream_key(symbol), "*", *(item for pair in fields.items() for item in pair))])
    except (OSError, TimeoutError) as exc:
        logger.warning("XADD failed; the matcher's sweep will pick the command up from the database",
                       extra={"symbol": symbol, "command": kind, "row_id": row_id, "error": str(exc)})


async def _cancel(request: _Request):
    admitted = await _admit(request)
    if not 0 < request.order_id <= entry.BIGINT_MAX:
        raise entry.order_not_found()
    row = entry.cancel_outcome(await aio.fetch_one(entry.CANCEL_SQL, admitted.credentials.user_id, request.order_id,
                                                   *_origin(request, admitted.credentials).cancel_params()))
    await _after_commit(row["symbol"], stream.CANCEL, request.order_id)
    return 202, _render(row, await _market_for(row["symbol"])), []


async def _cancel_all(request: _Request):
    admitted = await _admit(request)
    symbol = _validated("cancel_all", QueryDict(request.query_string))["market"]
    market = await _market_for(symbol)
    if market is None:
        raise ApplicationError("UNKNOWN_MARKET", f"There is no market {str(symbol)[:40]!r}.", field="market")
    if market.status == Market.Status.HALTED:
        raise entry.market_halted_for_cancels()
    user_id = admitted.credentials.user_id
    await _warm_risk(user_id)
    pretrade.restrictions_check(user_id=user_id, market_id=None, cancel=True)  # a frozen account cannot
    count = (await aio.fetch_one(entry.CANCEL_ALL_SQL, user_id, market.id, market.symbol,
                                 *_origin(request, admitted.credentials).cancel_params()))["orders_cancel_all"]
    if count:
        await _after_commit(market.symbol, stream.CANCEL_ALL, user_id)
    return 202, {"market": symbol.upper(), "orders_to_cancel": count}, []
