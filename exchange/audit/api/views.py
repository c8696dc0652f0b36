"""Compliance exports over HTTP: ``GET /api/v1/compliance/{audit-logs,orders,trades,ledger}``.

Session only (an API key, however scoped, cannot export everyone's data)
and Compliance role only. The body streams as CSV or JSON Lines with flat
memory (``exchange.audit.exports``); errors come before the first byte, as
JSON ``{"code", "message", "field"}``.
"""

from __future__ import annotations

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import IsAuthenticated
from rest_framework.views import APIView

from exchange.apikeys.permissions import SESSION_ONLY, ApiKeyPermission
from exchange.audit.exports import export_request, export_start
from exchange.audit.permissions import CompliancePermission
from exchange.audit.services import audit_context
from exchange.audit.streaming import export_response
from exchange.core.schema import NOT_AUTHENTICATED, RATE_LIMITED, error_response

TAGS = ["Compliance"]


class _IgnoreFormatParameter(DefaultContentNegotiation):
    """``format`` here is the export's (csv, jsonl), not DRF's renderer override; errors are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


def _parameters(*, actor: str | None, action: str | None, market: str | None, user: str) -> list[OpenApiParameter]:
    parameters = [
        OpenApiParameter("format", str, enum=["csv", "jsonl"], default="csv",
                         description="CSV with a header line, or JSON Lines (one object per line)."),
        OpenApiParameter("start", OpenApiTypes.DATETIME, description="From this time (inclusive); a date means "
                         "midnight UTC, a time without a zone UTC. Example: 2026-01-01."),
        OpenApiParameter("end", OpenApiTypes.DATETIME, description="Until this time (exclusive)."),
    ]
    for name, description in (("actor", actor), ("action", action), ("market", market), ("user", user)):
        if description:
            parameters.append(OpenApiParameter(name, str, description=description))
    return parameters


def _schema(*, operation_id: str, summary: str, columns: str, actor=None, action=None, market=None, user: str,
            example_csv: str):
    unsupported = [name for name, description in (("actor", actor), ("action", action), ("market", market))
                   if not description]
    errors = [
        ("INVALID_FORMAT", "format must be csv or jsonl.", "format"),
        ("INVALID_DATE", "start must be an ISO 8601 date or date-time, e.g. 2026-01-31 or 2026-01-31T12:00:00Z.",
         "start"),
        ("INVALID_RANGE", "end must be after start.", "end"),
        ("UNKNOWN_USER", "There is no user 'mallory'.", "user"),
        ("UNKNOWN_FILTER", "page is not a filter; use start, end, actor, action, market, user.", "page"),
        ("INVALID_CHARACTER", "user contains a control character.", "user"),
    ]
    if action:
        errors.append(("INVALID_ACTION", "action must be one or more codes separated by commas, e.g. "
                                         "WITHDRAWAL_APPROVE,BALANCE_ADJUST.", "action"))
    if market:
        errors.append(("INVALID_MARKET", "market must be a symbol such as BTC-USDT.", "market"))
    for name in unsupported:
        errors.append(("UNSUPPORTED_FILTER", f"This export cannot be filtered by {name}.", name))
    return extend_schema(
        tags=TAGS,
        operation_id=operation_id,
        summary=summary,
        auth=[{"cookieAuth": []}],
        parameters=_parameters(actor=actor, action=action, market=market, user=user),
        responses={
            (200, "text/csv"): OpenApiResponse(OpenApiTypes.STR, description=f"CSV, columns: {columns}.",
                                               examples=[OpenApiExample("CSV", value=example_csv)]),
            (200, "application/x-ndjson"): OpenApiResponse(
                OpenApiTypes.STR, description="JSON Lines: one object per row with the same fields."),
            400: error_response("A filter is invalid; nothing was exported (and nothing audited).", *errors),
            401: NOT_AUTHENTICATED,
            403: error_response(
                "Not a member of the Compliance role, or signed with an API key (exports need a session).",
                ("COMPLIANCE_ONLY", "Only members of the Compliance role may export compliance data.", None),
                ("API_KEY_NOT_ALLOWED", "This endpoint cannot be used with an API key; sign in with a session.",
                 None),
            ),
            429: RATE_LIMITED,
        },
        description=(f"{summary} Streams the whole result (no pagination), oldest first, with flat memory. "
                     "Compliance role only, session only; every export writes an EXPORT audit row with its "
                     "filters. Filters combine with AND."),
    )


class _ExportApi(APIView):
    permission_classes = [IsAuthenticated, ApiKeyPermission, CompliancePermission]
    api_key_permission = SESSION_ONLY
    content_negotiation_class = _IgnoreFormatParameter
    table = ""

    def get(self, request):
        export = export_request(table=self.table, params=request.query_params.dict())
        return export_response(export, export_start(export, audit=audit_context(request)))


_USER = "Whose data: a username (or user id)."


class AuditLogExportApi(_ExportApi):
    table = "audit-logs"

    @_schema(
        operation_id="compliance_audit_logs_export", summary="Export the audit log.",
        columns="id, txid, created_at, action, object_type, object_id, market, actor_user_id, actor_username, "
                "actor_api_key_id, actor_api_key, actor_staff_id, actor_staff_username, actor_system, "
                "subject_user_id, subject_username, ip, user_agent, request_id, before, after, chain_seq, "
                "chain_prev_hash, chain_hash",
        actor="Who acted: a username (user or staff member), or system:<process> (e.g. system:matcher:BTC-USDT).",
        action="Action codes, comma-separated (docs/AUDIT.md lists them), e.g. WITHDRAWAL_APPROVE,BALANCE_ADJUST.",
        market="A market symbol, e.g. BTC-USDT.", user="Whose account the action concerns: a username (or id).",
        example_csv="id,txid,created_at,action,...\n41,7731,2026-01-02T03:04:05.123456Z,WITHDRAWAL_APPROVE,...\n",
    )
    def get(self, request):
        return super().get(request)


class OrderExportApi(_ExportApi):
    table = "orders"

    @_schema(
        operation_id="compliance_orders_export", summary="Export orders (by creation time).",
        columns="id, created_at, updated_at, user_id, username, market, client_order_id, side, type, time_in_force, "
                "price, stop_price, quantity, quote_quantity, status, status_reason, filled_quantity, "
                "filled_notional, fee_total, client_ip, api_key_id",
        market="A market symbol, e.g. BTC-USDT.", user=_USER,
        example_csv="id,created_at,updated_at,user_id,username,market,...\n12,2026-01-02T03:04:05.000000Z,...\n",
    )
    def get(self, request):
        return super().get(request)


class TradeExportApi(_ExportApi):
    table = "trades"

    @_schema(
        operation_id="compliance_trades_export", summary="Export trades (by execution time).",
        columns="id, executed_at, market, sequence, price, quantity, notional, taker_side, maker_order_id, "
                "taker_order_id, maker_user_id, maker_username, taker_user_id, taker_username, maker_fee, taker_fee",
        market="A market symbol, e.g. BTC-USDT.", user="A username (or id): trades where they were maker or taker.",
        example_csv="id,executed_at,market,sequence,price,quantity,...\n9,2026-01-02T03:04:05.000000Z,BTC-USDT,...\n",
    )
    def get(self, request):
        return super().get(request)


class LedgerExportApi(_ExportApi):
    table = "ledger"

    @_schema(
        operation_id="compliance_ledger_export", summary="Export ledger entries (by journal transaction time).",
        columns="entry_id, transaction_id, created_at, kind, reference, memo, actor_id, actor_username, account_id, "
                "account_kind, user_id, username, asset, amount, hold",
        actor="The operator who made the transaction (a username).",
        action="Journal transaction kinds, comma-separated: HOLD, RELEASE, TRADE, DEPOSIT, WITHDRAWAL_APPROVE, "
               "WITHDRAWAL_COMPLETE, ADJUSTMENT.",
        user="Whose accounts: a username (or id).",
        example_csv=("entry_id,transaction_id,created_at,kind,reference,...\n"
                     "3,2,2026-01-02T03:04:05.000000Z,DEPOSIT,...\n"),
    )
    def get(self, request):
        return super().get(request)
