"""Writes to the ledger, each in one database transaction (nesting in the caller's).

Holds and trade settlement (for the orders app and the matcher):
``funds_hold``, ``hold_increase``, ``hold_release``, ``trade_settle`` and the
batch entry point ``ledger_apply``. Operator and user flows: ``deposit_credit``,
``withdrawal_request`` / ``_approve`` / ``_reject`` / ``_complete`` and
``balance_adjust``. All of them build on ``wallet.ledger.Posting``.
"""

from wallet.ledger import LedgerUsageError
from wallet.services.adjustments import balance_adjust
from wallet.services.deposits import deposit_credit
from wallet.services.holds import (
    HoldIncrease,
    HoldPlace,
    HoldRelease,
    Operation,
    TradeSettlement,
    funds_hold,
    hold_increase,
    hold_release,
    ledger_apply,
    trade_settle,
)
from wallet.services.settlement import BatchSettlement, batch_settle
from wallet.services.withdrawals import (
    withdrawal_approve,
    withdrawal_complete,
    withdrawal_reject,
    withdrawal_request,
)

__all__ = [
    "BatchSettlement",
    "batch_settle",
    "HoldIncrease",
    "HoldPlace",
    "HoldRelease",
    "LedgerUsageError",
    "Operation",
    "TradeSettlement",
    "balance_adjust",
    "deposit_credit",
    "funds_hold",
    "hold_increase",
    "hold_release",
    "ledger_apply",
    "trade_settle",
    "withdrawal_approve",
    "withdrawal_complete",
    "withdrawal_reject",
    "withdrawal_request",
]
