"""The wallet API: balances, ledger history, withdrawals, deposits and the custody webhook.

Every read is the caller's own data (selectors scoped by user); lists that
grow without bound are cursor-paginated, newest first. What operators write
for themselves (a withdrawal's review reason, the memo of a journal
transaction) is never shown to the user. Requesting a withdrawal with a
session needs step-up (``exchange.accounts.stepup``).
"""

from __future__ import annotations

import json

from django.contrib.auth import get_user_model
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, extend_schema
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.accounts.stepup import step_up_verify
from exchange.apikeys.models import ApiKey
from exchange.apikeys.permissions import WITHDRAW
from exchange.audit.services import audit_context, audit_system

from exchange.core.errors import ApplicationError
from exchange.core.fields import AmountField, DecimalString, QueryInputSerializer
from exchange.core.pagination import StrictCursorPagination
from exchange.core.schema import error_response
from wallet.custody import SIGNATURE_HEADER, TIMESTAMP_HEADER, custody_request_verify
from wallet.models import AccountKind, Deposit, TransactionKind, Withdrawal
from wallet.representations import balance_representation
from wallet.selectors import (
    asset_get,
    balances_for_user,
    deposits_for_user,
    ledger_entries_for_user,
    withdrawals_for_user,
)
from wallet.services import deposit_credit, withdrawal_request

TAGS = ["Wallet"]


class NewestFirstPagination(StrictCursorPagination):
    page_size = 50
    max_page_size = 500


def _page(request, view, queryset, output_class):
    paginator = NewestFirstPagination()
    rows = paginator.paginate_queryset(queryset, request, view=view)
    return paginator.get_paginated_response(output_class(rows, many=True).data)


def _page_schema(output_class, name: str):
    """The schema of a page of ``output_class``: {next, previous, results}."""
    return type(
        name,
        (serializers.Serializer,),
        {
            "next": serializers.URLField(allow_null=True, help_text="The next (older) page, or null."),
            "previous": serializers.URLField(allow_null=True, help_text="The previous (newer) page, or null."),
            "results": output_class(many=True),
        },
    )


_PAGE_PARAMETERS = [
    OpenApiParameter("cursor", str, description="Opaque cursor from `next` or `previous`."),
    OpenApiParameter("limit", int, description="Page size, 1-500 (default 50)."),
]


# -- balances --------------------------------------------------------------------------


class BalanceOutput(serializers.Serializer):
    asset = serializers.CharField()
    available = DecimalString(help_text="Free to trade or withdraw.")
    held = DecimalString(help_text="Reserved for open orders and requested withdrawals.")
    total = DecimalString(help_text="available + held.")

    def to_representation(self, balance):
        # Declared above (OpenAPI), rendered by wallet/representations.py for REST and live alike.
        return balance_representation(balance.asset, balance.available, balance.held)


class BalanceListApi(APIView):
    @extend_schema(
        tags=TAGS,
        operation_id="balances_list",
        responses=BalanceOutput(many=True),
        description="Your balance of every listed asset (zero where you hold none), ordered by asset code.",
        examples=[
            OpenApiExample(
                "Balances",
                value=[{"asset": "BTC", "available": "1.5", "held": "0.5", "total": "2"},
                       {"asset": "USDT", "available": "0", "held": "0", "total": "0"}],
                response_only=True,
            )
        ],
    )
    def get(self, request):
        return Response(BalanceOutput(balances_for_user(user=request.user), many=True).data)


# -- ledger ---------------------------------------------------------------------------------


class LedgerEntryOutput(serializers.Serializer):
    id = serializers.IntegerField()
    time = serializers.DateTimeField(source="transaction.created_at")
    asset = serializers.CharField(source="asset.code")
    account_kind = serializers.ChoiceField(
        source="account.kind", choices=[AccountKind.AVAILABLE, AccountKind.HELD], help_text="Which of your balances."
    )
    amount = DecimalString(help_text="Signed: positive into the balance, negative out of it.")
    kind = serializers.ChoiceField(source="transaction.kind", choices=TransactionKind.choices)
    reference = serializers.CharField(source="transaction.reference", help_text='e.g. "order:12", "withdrawal:3".')


class LedgerEntryListApi(APIView):
    class FilterInput(QueryInputSerializer):
        asset = serializers.CharField(required=False, max_length=16)
        kind = serializers.ChoiceField(choices=TransactionKind.choices, required=False)
        account_kind = serializers.ChoiceField(choices=[AccountKind.AVAILABLE, AccountKind.HELD], required=False)
        start_time = serializers.DateTimeField(required=False, help_text="Inclusive, ISO 8601.")
        end_time = serializers.DateTimeField(required=False, help_text="Exclusive, ISO 8601.")

    @extend_schema(
        tags=TAGS,
        operation_id="ledger_list",
        parameters=[FilterInput, *_PAGE_PARAMETERS],
        responses=_page_schema(LedgerEntryOutput, "LedgerEntryPage"),
        description="Every movement of your balances, newest first: holds, releases, trades, deposits, "
        "withdrawals and adjustments. Filter by asset, transaction kind, balance and time.",
        examples=[
            OpenApiExample(
                "Trades settled by a matcher batch",
                value={
                    "next": None,
                    "previous": None,
                    "results": [
                        {"id": 42, "time": "2026-11-23T10:00:00Z", "asset": "BTC", "account_kind": "AVAILABLE",
                         "amount": "0.4995", "kind": "MATCH", "reference": "match:BTC-USDT:7:12"},
                        {"id": 40, "time": "2026-11-23T10:00:00Z", "asset": "USDT", "account_kind": "HELD",
                         "amount": "-15000", "kind": "MATCH", "reference": "match:BTC-USDT:7:12"},
                    ],
                },
                response_only=True,
            )
        ],
    )
    def get(self, request):
        filters = self.FilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        entries = ledger_entries_for_user(user=request.user, **filters.validated_data)
        return _page(request, self, entries, LedgerEntryOutput)


# -- withdrawals -----------------------------------------------------------------------------


class WithdrawalOutput(serializers.Serializer):
    id = serializers.IntegerField()
    asset = serializers.CharField(source="asset.code")
    amount = DecimalString()
    address = serializers.CharField()
    status = serializers.ChoiceField(choices=Withdrawal.Status.choices)
    txid = serializers.CharField(help_text="The external transaction id once sent.")
    created_at = serializers.DateTimeField()
    reviewed_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)


WITHDRAWAL_EXAMPLE = {
    "id": 7, "asset": "BTC", "amount": "0.25", "address": "bc1qexampleaddress", "status": "REQUESTED", "txid": "", "created_at": "2026-11-23T10:00:00Z", "reviewed_at": None, "completed_at": None,
}


class WithdrawalListCreateApi(APIView):
    api_key_permission = {"POST": WITHDRAW}  # GET needs read
    class CreateInput(serializers.Serializer):
        asset = serializers.CharField(max_length=16)
        amount = AmountField(help_text="At most the asset's precision in decimal places.")
        address = serializers.RegexField(
            r"^[A-Za-z0-9:._\-]{1,128}$", max_length=128, error_messages={"invalid": "Not a valid address."}
        )
        password = serializers.CharField(max_length=128, required=False, write_only=True, trim_whitespace=False,
                                         help_text="Step-up with a session, without two-factor authentication.")
        otp = serializers.CharField(max_length=8, required=False, write_only=True,
                                    help_text="Step-up with a session, with two-factor authentication on.")

    class FilterInput(QueryInputSerializer):
        status = serializers.ChoiceField(choices=Withdrawal.Status.choices, required=False)
        asset = serializers.CharField(required=False, max_length=16)

    @extend_schema(
        tags=TAGS,
        operation_id="withdrawals_create",
        request=CreateInput,
        responses={201: WithdrawalOutput},
        description="Request a withdrawal: the amount is held from your available balance at once and sent "
        "after an operator approves it. With a session it needs step-up: `otp` (your authenticator code) when "
        "two-factor authentication is on, otherwise `password` (403 STEP_UP_REQUIRED without it, 400 "
        "INVALID_OTP / INVALID_PASSWORD, 429 LOGIN_LOCKED_OUT); a request signed with a key that has the "
        "withdraw permission needs none. Errors: INVALID_AMOUNT, MUST_BE_POSITIVE, TOO_MANY_DECIMALS, "
        "AMOUNT_TOO_LARGE, INVALID_PRECISION, UNKNOWN_ASSET, INVALID (address), INSUFFICIENT_FUNDS.",
        examples=[
            OpenApiExample("Request", value={"asset": "BTC", "amount": "0.25", "address": "bc1qexampleaddress",
                                             "otp": "123456"}, request_only=True),
            OpenApiExample("Requested", value=WITHDRAWAL_EXAMPLE, response_only=True, status_codes=["201"]),
            OpenApiExample(
                "Insufficient funds",
                value={"code": "INSUFFICIENT_FUNDS", "message": "Insufficient BTC: 0.25 needed, 0.1 available.",
                       "field": None, "asset": "BTC"},
                response_only=True,
                status_codes=["400"],
            ),
        ],
    )
    def post(self, request):
        data = self.CreateInput(data=request.data)
        data.is_valid(raise_exception=True)
        if not isinstance(request.auth, ApiKey):
            step_up_verify(request=request._request, user=request.user, password=data.validated_data.get("password"),
                           otp=data.validated_data.get("otp"))
        withdrawal = withdrawal_request(
            user=request.user,
            asset=asset_get(code=data.validated_data["asset"]),
            amount=data.validated_data["amount"],
            address=data.validated_data["address"],
            audit=audit_context(request),
        )
        return Response(WithdrawalOutput(withdrawal).data, status=status.HTTP_201_CREATED)

    @extend_schema(
        tags=TAGS,
        operation_id="withdrawals_list",
        parameters=[FilterInput, *_PAGE_PARAMETERS],
        responses=_page_schema(WithdrawalOutput, "WithdrawalPage"),
        description="Your withdrawals, newest first.",
    )
    def get(self, request):
        filters = self.FilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        withdrawals = withdrawals_for_user(user=request.user, **filters.validated_data)
        return _page(request, self, withdrawals, WithdrawalOutput)


# -- deposits -------------------------------------------------------------------------------


class DepositOutput(serializers.Serializer):
    id = serializers.IntegerField()
    asset = serializers.CharField(source="asset.code")
    amount = DecimalString()
    source = serializers.ChoiceField(choices=Deposit.Source.choices)
    txid = serializers.CharField()
    created_at = serializers.DateTimeField()


class DepositListApi(APIView):
    class FilterInput(QueryInputSerializer):
        asset = serializers.CharField(required=False, max_length=16)

    @extend_schema(
        tags=TAGS,
        operation_id="deposits_list",
        parameters=[FilterInput, *_PAGE_PARAMETERS],
        responses=_page_schema(DepositOutput, "DepositPage"),
        description="Deposits credited to you, newest first.",
    )
    def get(self, request):
        filters = self.FilterInput(data=request.query_params)
        filters.is_valid(raise_exception=True)
        deposits = deposits_for_user(user=request.user, **filters.validated_data)
        return _page(request, self, deposits, DepositOutput)


# -- custody webhook ------------------------------------------------------------------------


class CustodyDepositApi(APIView):
    """Deposits reported by the custody system, authenticated by an HMAC signature, not a session."""

    authentication_classes: list = []
    permission_classes = [AllowAny]

    class Input(serializers.Serializer):
        user_id = serializers.IntegerField(min_value=1)
        asset = serializers.CharField(max_length=16)
        amount = AmountField()
        txid = serializers.CharField(max_length=128)
        memo = serializers.CharField(max_length=500, required=False, allow_blank=True, default="")

    class Output(DepositOutput):
        user_id = serializers.IntegerField()

    @extend_schema(
        tags=["Custody"],
        operation_id="custody_deposits_create",
        request=Input,
        responses={
            201: Output, 200: Output,
            401: error_response("The webhook's signature or timestamp was refused.",
                                ("SIGNATURE_INVALID", "The signature does not match the body.", None),
                                ("TIMESTAMP_STALE", "The timestamp is more than 5 minutes from the server's clock.",
                                 None)),
            409: error_response("This (asset, txid) was already credited with other details.",
                                ("DEPOSIT_CONFLICT", "This txid was credited with other details.", "txid")),
            503: error_response("No webhook secret is configured, or a dependency is down.",
                                ("CUSTODY_WEBHOOK_DISABLED", "The custody webhook is not configured.", None)),
        },
        auth=[],
        parameters=[
            OpenApiParameter(TIMESTAMP_HEADER, str, OpenApiParameter.HEADER, required=True,
                             description="Unix seconds; refused when more than 5 minutes from the server's clock."),
            OpenApiParameter(SIGNATURE_HEADER, str, OpenApiParameter.HEADER, required=True,
                             description='hex(HMAC-SHA256(secret, timestamp + "." + raw body)).'),
        ],
        description="Credit a deposit seen by the custody system. 201 when credited, 200 when this (asset, txid) "
        "was already credited (retries are safe). 401 SIGNATURE_MISSING / SIGNATURE_INVALID / TIMESTAMP_INVALID / "
        "TIMESTAMP_STALE; 503 CUSTODY_WEBHOOK_DISABLED while no secret is configured; 409 DEPOSIT_CONFLICT when "
        "the txid was credited with other details. See docs/LEDGER.md.",
        examples=[
            OpenApiExample(
                "Deposit",
                value={"user_id": 12, "asset": "BTC", "amount": "0.5", "txid": "4a5e1e4baab89f3a", "memo": ""},
                request_only=True,
            )
        ],
    )
    def post(self, request):
        body = request.body
        custody_request_verify(
            body=body, timestamp=request.headers.get(TIMESTAMP_HEADER), signature=request.headers.get(SIGNATURE_HEADER)
        )
        try:
            payload = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            raise ApplicationError("MALFORMED_REQUEST", "The body is not valid JSON.") from None
        data = self.Input(data=payload)
        data.is_valid(raise_exception=True)
        user = get_user_model().objects.filter(pk=data.validated_data["user_id"]).first()
        if user is None:
            raise ApplicationError("UNKNOWN_USER", "There is no such user.", field="user_id")
        deposit, created = deposit_credit(
            user=user,
            asset=asset_get(code=data.validated_data["asset"]),
            amount=data.validated_data["amount"],
            txid=data.validated_data["txid"],
            source=Deposit.Source.CUSTODY,
            memo=data.validated_data["memo"],
            audit={**audit_context(request), **audit_system("custody-webhook")},
        )
        return Response(self.Output(deposit).data, status=status.HTTP_201_CREATED if created else status.HTTP_200_OK)
