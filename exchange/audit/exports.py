"""Compliance exports: the audit log, orders, trades and ledger entries as CSV or JSON Lines,
filtered, streamed with flat memory, and themselves audited.

One mechanism serves the API, the admin's export page and
``manage.py export_audit_log``:

1. ``export_request`` checks the filters (stable error codes, nothing
   written on bad input) and resolves users and markets;
2. ``export_start`` writes the EXPORT audit row (its own transaction,
   committed before a byte leaves) and returns the byte chunks;
3. the chunks come from ``COPY (SELECT ...) TO STDOUT``: PostgreSQL renders
   CSV itself (JSON Lines: one ``row_to_json`` per line), one statement and
   snapshot, rows streamed as they are produced; Python only gathers them
   into ~60 KB chunks. Memory stays flat whatever the row count.

Rows come in id order. Times are ISO 8601 UTC with microseconds, amounts
decimal strings without trailing zeros, ``before``/``after`` the stored
JSON. The audit export carries each row's chain position and hashes, so an
export can be checked offline (docs/AUDIT.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, time, timezone as dt_timezone
from typing import Iterator

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils.dateparse import parse_date, parse_datetime

from exchange.audit import actions
from exchange.audit.services import audit_log_record
from exchange.core.errors import ApplicationError
from exchange.selectors import SYMBOL

FORMATS = {"csv": "text/csv; charset=utf-8", "jsonl": "application/x-ndjson"}
# Under Django's ASGI message size (64 KB) by more than a typical row, so a chunk is one message.
CHUNK_BYTES = 60 * 1024
FILTERS = ("start", "end", "actor", "action", "market", "user")
SYSTEM_PREFIX = "system:"
ACTION_CODE = re.compile(r"[A-Z][A-Z0-9_]{0,63}")


def _iso(column: str) -> str:
    return f"""to_char({column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


def _amount(column: str) -> str:
    return f"trim_scale({column})::text"


_USERS = get_user_model()._meta.db_table


@dataclass(frozen=True)
class ExportTable:
    """What one export reads: columns (name, SQL), joins, and the SQL of each filter it supports.

    A filter's SQL takes its value as ``%(name)s``; a filter a table does
    not list is refused (UNSUPPORTED_FILTER) rather than ignored.
    """

    name: str
    columns: tuple[tuple[str, str], ...]
    source: str
    time_column: str
    order_by: str
    filters: dict[str, str] = field(default_factory=dict)

    def select(self, where: list[str]) -> str:
        columns = ",\n    ".join(f"{sql} AS {name}" for name, sql in self.columns)
        condition = f"WHERE {' AND '.join(where)}" if where else ""
        return f"SELECT\n    {columns}\nFROM {self.source}\n{condition}\nORDER BY {self.order_by}"


TABLES = {
    table.name: table
    for table in (
        ExportTable(
            name="audit-logs",
            columns=(
                ("id", "a.id"), ("txid", "a.txid::text"), ("created_at", _iso("a.created_at")),
                ("action", "a.action"), ("object_type", "a.object_type"), ("object_id", "a.object_id"),
                ("market", "a.market"), ("actor_user_id", "a.actor_user_id"), ("actor_username", "au.username"),
                ("actor_api_key_id", "a.actor_api_key_id"), ("actor_api_key", "k.key_id"),
                ("actor_staff_id", "a.actor_staff_id"), ("actor_staff_username", "su.username"),
                ("actor_system", "a.actor_system"), ("subject_user_id", "a.subject_user_id"),
                ("subject_username", "subj.username"), ("ip", "host(a.ip)"), ("user_agent", "a.user_agent"),
                ("request_id", "a.request_id"), ("before", "a.before"), ("after", "a.after"),
                ("chain_seq", "l.seq"), ("chain_prev_hash", "encode(l.prev_hash, 'hex')"),
                ("chain_hash", "encode(l.hash, 'hex')"),
            ),
            source=f"""exchange_auditlog a
                LEFT JOIN {_USERS} au ON au.id = a.actor_user_id
                LEFT JOIN exchange_apikey k ON k.id = a.actor_api_key_id
                LEFT JOIN {_USERS} su ON su.id = a.actor_staff_id
                LEFT JOIN {_USERS} subj ON subj.id = a.subject_user_id
                LEFT JOIN exchange_auditchainlink l ON l.log_id = a.id""",
            time_column="a.created_at",
            order_by="a.id",
            filters={
                "actor_user": "(a.actor_user_id = %(actor_user)s OR a.actor_staff_id = %(actor_user)s)",
                "actor_system": "a.actor_system = %(actor_system)s",
                "action": "a.action = ANY(%(action)s)",
                "market": "a.market = %(market)s",
                "user": "a.subject_user_id = %(user)s",
            },
        ),
        ExportTable(
            name="orders",
            columns=(
                ("id", "o.id"), ("created_at", _iso("o.created_at")), ("updated_at", _iso("o.updated_at")),
                ("user_id", "o.user_id"), ("username", "u.username"), ("market", "m.symbol"),
                ("client_order_id", "o.client_order_id"), ("side", "o.side"), ("type", "o.type"),
                ("time_in_force", "o.time_in_force"), ("price", _amount("o.price")),
                ("stop_price", _amount("o.stop_price")), ("quantity", _amount("o.quantity")),
                ("quote_quantity", _amount("o.quote_quantity")), ("status", "o.status"),
                ("status_reason", "o.status_reason"), ("filled_quantity", _amount("o.filled_quantity")),
                ("filled_notional", _amount("o.filled_notional")), ("fee_total", _amount("o.fee_total")),
                ("client_ip", "host(o.client_ip)"), ("api_key_id", "o.api_key_id"),
            ),
            source=f"""orders_order o
                JOIN exchange_market m ON m.id = o.market_id
                JOIN {_USERS} u ON u.id = o.user_id""",
            time_column="o.created_at",
            order_by="o.id",
            filters={"market": "m.symbol = %(market)s", "user": "o.user_id = %(user)s"},
        ),
        ExportTable(
            name="trades",
            columns=(
                ("id", "t.id"), ("executed_at", _iso("t.executed_at")), ("market", "m.symbol"),
                ("sequence", "t.sequence"), ("price", _amount("t.price")), ("quantity", _amount("t.quantity")),
                ("notional", _amount("t.notional")), ("taker_side", "t.taker_side"),
                ("maker_order_id", "t.maker_order_id"), ("taker_order_id", "t.taker_order_id"),
                ("maker_user_id", "t.maker_user_id"), ("maker_username", "mu.username"),
                ("taker_user_id", "t.taker_user_id"), ("taker_username", "tu.username"),
                ("maker_fee", _amount("t.maker_fee")), ("taker_fee", _amount("t.taker_fee")),
            ),
            source=f"""orders_trade t
                JOIN exchange_market m ON m.id = t.market_id
                JOIN {_USERS} mu ON mu.id = t.maker_user_id
                JOIN {_USERS} tu ON tu.id = t.taker_user_id""",
            time_column="t.executed_at",
            order_by="t.id",
            filters={"market": "m.symbol = %(market)s",
                     "user": "(t.maker_user_id = %(user)s OR t.taker_user_id = %(user)s)"},
        ),
        ExportTable(
            name="ledger",
            columns=(
                ("entry_id", "e.id"), ("transaction_id", "e.transaction_id"), ("created_at", _iso("tx.created_at")),
                ("kind", "tx.kind"), ("reference", "tx.reference"), ("memo", "tx.memo"),
                ("actor_id", "tx.actor_id"), ("actor_username", "act.username"), ("account_id", "e.account_id"),
                ("account_kind", "acc.kind"), ("user_id", "acc.user_id"), ("username", "u.username"),
                ("asset", "s.code"), ("amount", _amount("e.amount")), ("hold", "h.reference"),
            ),
            source=f"""wallet_ledgerentry e
                JOIN wallet_ledgertransaction tx ON tx.id = e.transaction_id
                JOIN wallet_account acc ON acc.id = e.account_id
                JOIN exchange_asset s ON s.id = e.asset_id
                LEFT JOIN {_USERS} u ON u.id = acc.user_id
                LEFT JOIN {_USERS} act ON act.id = tx.actor_id
                LEFT JOIN wallet_hold h ON h.id = e.hold_id""",
            time_column="tx.created_at",
            order_by="e.id",
            filters={"actor_user": "tx.actor_id = %(actor_user)s", "action": "tx.kind = ANY(%(action)s)",
                     "user": "acc.user_id = %(user)s"},
        ),
    )
}
# The query parameter each table filter answers to.
_PARAMETER_OF = {"actor_user": "actor", "actor_system": "actor", "action": "action", "market": "market",
                 "user": "user"}


@dataclass(frozen=True)
class ExportRequest:
    """A checked export: which table, which format, and the filters as SQL values."""

    table: ExportTable
    format: str
    start: datetime | None = None
    end: datetime | None = None
    values: dict = field(default_factory=dict)
    # The filters as given (for the EXPORT audit row and the file name).
    given: dict = field(default_factory=dict)

    @property
    def content_type(self) -> str:
        return FORMATS[self.format]

    @property
    def filename(self) -> str:
        stamp = datetime.now(dt_timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        return f"{self.table.name}-{stamp}.{self.format}"

    def sql(self) -> tuple[str, dict]:
        where, params = [], dict(self.values)
        if self.start is not None:
            where.append(f"{self.table.time_column} >= %(start)s")
            params["start"] = self.start
        if self.end is not None:
            where.append(f"{self.table.time_column} < %(end)s")
            params["end"] = self.end
        where += [self.table.filters[name] for name in self.values]
        select = self.table.select(where)
        if self.format == "csv":
            return f"COPY (\n{select}\n) TO STDOUT WITH (FORMAT csv, HEADER)", params
        # One JSON object per line. CSV mode with a delimiter and quote that
        # JSON text never contains raw (it escapes control characters), so
        # PostgreSQL writes each object as is: text mode would double every
        # backslash of the JSON's own escapes.
        return (f"COPY (SELECT row_to_json(x)::text FROM (\n{select}\n) x) "
                "TO STDOUT WITH (FORMAT csv, DELIMITER E'\\x02', QUOTE E'\\x01')"), params


def _moment(name: str, text: str) -> datetime:
    """An ISO 8601 date (midnight UTC) or date-time (UTC when it names no zone)."""
    text = text.strip()
    try:
        moment = parse_datetime(text)
        if moment is None:
            day = parse_date(text)
            moment = None if day is None else datetime.combine(day, time.min)
    except ValueError:
        moment = None
    if moment is None:
        raise ApplicationError("INVALID_DATE", f"{name} must be an ISO 8601 date or date-time, e.g. 2026-01-31 or "
                                               "2026-01-31T12:00:00Z.", field=name)
    return moment if moment.tzinfo else moment.replace(tzinfo=dt_timezone.utc)


def _user_id(name: str, text: str) -> int:
    """A user by username (case-insensitive) or, failing that, by numeric id."""
    User = get_user_model()
    user = User.objects.filter(username__iexact=text).only("id").first()
    if user is None and text.isascii() and text.isdigit():
        user = User.objects.filter(pk=int(text)).only("id").first()
    if user is None:
        raise ApplicationError("UNKNOWN_USER", f"There is no user {text!r}.", field=name)
    return user.pk


def export_request(*, table: str, params: dict[str, str]) -> ExportRequest:
    """Check an export's table, format and filters; ApplicationError (400) on anything wrong.

    ``params``: format (csv, the default, or jsonl), start and end (end
    exclusive), actor (a username, or "system:<name>" for a process), action
    (codes, comma-separated), market (a symbol) and user (whose data: a
    username or id). Empty values are ignored.
    """
    spec = TABLES.get(table)
    if spec is None:
        raise ApplicationError("UNKNOWN_TABLE", f"Exports are {', '.join(TABLES)}.", field="table",
                               status_code=404)
    unknown = sorted(set(params) - {"format", *FILTERS})
    if unknown:
        raise ApplicationError("UNKNOWN_FILTER", f"{unknown[0]} is not a filter; use {', '.join(FILTERS)}.",
                               field=unknown[0])
    given = {name: str(value).strip() for name, value in params.items() if value is not None and str(value).strip()}
    for name, value in given.items():
        # PostgreSQL refuses text with a NUL character: refused here, not as a 500.
        if not value.isprintable():
            raise ApplicationError("INVALID_CHARACTER", f"{name} contains a control character.", field=name)
    export_format = given.pop("format", "csv").lower()
    if export_format not in FORMATS:
        raise ApplicationError("INVALID_FORMAT", "format must be csv or jsonl.", field="format")
    start = _moment("start", given["start"]) if "start" in given else None
    end = _moment("end", given["end"]) if "end" in given else None
    if start is not None and end is not None and end <= start:
        raise ApplicationError("INVALID_RANGE", "end must be after start.", field="end")

    values: dict = {}
    if "actor" in given:
        actor = given["actor"]
        if actor.lower().startswith(SYSTEM_PREFIX):
            values["actor_system"] = actor[len(SYSTEM_PREFIX):]
        else:
            values["actor_user"] = _user_id("actor", actor)
    if "action" in given:
        codes = [code.strip().upper() for code in given["action"].split(",") if code.strip()]
        bad = [code for code in codes if not ACTION_CODE.fullmatch(code)]
        if not codes or bad:
            raise ApplicationError("INVALID_ACTION", "action must be one or more codes separated by commas, e.g. "
                                                     "WITHDRAWAL_APPROVE,BALANCE_ADJUST.", field="action")
        values["action"] = codes
    if "market" in given:
        symbol = given["market"].upper()
        if not SYMBOL.fullmatch(symbol):
            raise ApplicationError("INVALID_MARKET", "market must be a symbol such as BTC-USDT.", field="market")
        values["market"] = symbol
    if "user" in given:
        values["user"] = _user_id("user", given["user"])
    for name in values:
        if name not in spec.filters:
            what = "a system actor" if name == "actor_system" else _PARAMETER_OF[name]
            raise ApplicationError("UNSUPPORTED_FILTER", f"The {table} export cannot be filtered by {what}.",
                                   field=_PARAMETER_OF[name])
    return ExportRequest(table=spec, format=export_format, start=start, end=end, values=values,
                         given={name: given[name] for name in FILTERS if name in given})


def export_start(request: ExportRequest, *, audit: dict, reason: str = "") -> Iterator[bytes]:
    """Record the export (EXPORT, committed now) and return its byte chunks.

    The chunks are produced lazily on the caller's database connection: the
    consumer must iterate them in the thread that called this (Django's
    streaming response does, see ``exchange.audit.streaming``).
    """
    with transaction.atomic():
        audit_log_record(action=actions.EXPORT, object_type="exchange.export", object_id=request.table.name,
                         after={"format": request.format, "filters": request.given,
                                **({"reason": reason} if reason else {})}, **audit)
    return export_chunks(request)


def export_chunks(request: ExportRequest, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
    """The export's bytes in chunks of about ``chunk_bytes`` (one COPY statement)."""
    statement, params = request.sql()
    connection.ensure_connection()
    with connection.cursor() as cursor, cursor.cursor.copy(statement, params) as copy:
        buffer = bytearray()
        for data in copy:
            buffer += data
            if len(buffer) >= chunk_bytes:
                yield bytes(buffer)
                buffer.clear()
        if buffer:
            yield bytes(buffer)
