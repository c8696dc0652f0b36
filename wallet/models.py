"""The double-entry ledger: accounts, an immutable journal, holds, deposits,
withdrawals and the fee schedule.

Design
------
Every movement of money is a journal ``LedgerTransaction`` with two or more
``LedgerEntry`` rows. An entry moves a signed amount into (positive) or out
of (negative) one ``Account``; the entries of a transaction sum to exactly
zero per asset, so money is only ever moved, never made or lost. A mistake
is fixed by a correcting transaction: transactions and entries are never
updated or deleted (database triggers refuse it).

Accounts are unique per (user, asset, kind). Users have ``AVAILABLE`` and
``HELD`` accounts per asset; the operator's accounts have no user:
``FEES`` (fee revenue), ``EXTERNAL`` (the world outside: deposits come from
it, completed withdrawals go to it), ``WITHDRAWALS_PENDING`` (approved
withdrawals not yet sent) and ``ADJUSTMENTS`` (operator corrections).

Sign convention: an account's balance is the sum of its entries. User
accounts never go negative (checked before writing and by a database CHECK
constraint). ``EXTERNAL`` is normally negative: it mirrors the money that came
in from outside, so the sum of all accounts of an asset is always zero.

Holds: funds reserved for an open order or a requested withdrawal move from
AVAILABLE to HELD under a ``Hold`` identified by a unique reference string
("order:123", "withdrawal:7"). Every entry on a HELD account names its hold,
and a hold's ``amount_remaining`` is the sum of its entries; a fill consumes
the hold, a cancel releases the rest, and a closed hold has nothing left.

Balances are cached: ``Account.balance`` and ``Hold.amount_remaining`` are
updated in the same database transaction as the entries that change them,
by ``wallet.ledger.Posting``, the one primitive every service goes through:
it locks the touched holds, then the touched accounts, each in ascending id
order in one query, checks the new balances, and writes everything in bulk.

Rounding rule: the ledger never rounds. Every amount must already be a whole
number of the asset's smallest unit (``Asset.precision`` decimal places);
anything else is refused, and all ledger arithmetic runs in a decimal
context that raises rather than rounds. Fees are computed by the caller and
rounded DOWN to the asset's precision (``wallet.fees.fee_amount``); charging
a fee splits an amount that already exists between the receiver and FEES,
so no rounding anywhere can create money.

The database holds the journal to this by itself (migration 0002): journal
rows cannot be updated or deleted, accounts and holds cannot be deleted, and
every INSERT of entries is checked once per statement: references exist,
holds only and always on HELD entries and of the right user and asset, and
each transaction balances per asset.

Invariants (``wallet.invariants``, ``manage.py check_ledger``): each
transaction sums to zero per asset; each account's balance and each hold's
remaining equal the sum of their entries; no user balance and no hold is
negative; closed holds are empty; each user's HELD balance of an asset equals
the remaining of their holds of that asset; entries on HELD accounts, and
only those, name a hold of the same user and asset; all amounts are whole
units of their asset; and per reference type (withdrawals here, orders later)
what the holds must be.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Q
from django.db.models.functions import Now

from exchange.models import FEE_RATE_DIGITS, FEE_RATE_PLACES, Asset, Market, amount_field

REFERENCE_LENGTH = 100


class AccountKind(models.TextChoices):
    AVAILABLE = "AVAILABLE", "Available (user)"
    HELD = "HELD", "Held (user)"
    FEES = "FEES", "Fee revenue (operator)"
    EXTERNAL = "EXTERNAL", "External world (operator)"
    WITHDRAWALS_PENDING = "WITHDRAWALS_PENDING", "Approved withdrawals not yet sent (operator)"
    ADJUSTMENTS = "ADJUSTMENTS", "Adjustments (operator)"


USER_KINDS = (AccountKind.AVAILABLE, AccountKind.HELD)
OPERATOR_KINDS = (
    AccountKind.FEES,
    AccountKind.EXTERNAL,
    AccountKind.WITHDRAWALS_PENDING,
    AccountKind.ADJUSTMENTS,
)


class Account(models.Model):
    """One balance: a user's available or held funds of an asset, or an operator account."""

    # The unique (user, asset, kind) index serves lookups by user.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="ledger_accounts",
        db_index=False,
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="ledger_accounts")
    kind = models.CharField(max_length=24, choices=AccountKind.choices)
    balance = amount_field(default=0, help_text="Cached sum of this account's entries.")
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(
                fields=["user", "asset", "kind"], name="wallet_account_unique_owner_asset_kind", nulls_distinct=False
            ),
            models.CheckConstraint(
                condition=Q(kind__in=USER_KINDS, user__isnull=False) | Q(kind__in=OPERATOR_KINDS, user__isnull=True),
                name="wallet_account_user_iff_user_kind",
            ),
            models.CheckConstraint(
                condition=Q(kind__in=OPERATOR_KINDS) | Q(balance__gte=0), name="wallet_account_user_balance_not_negative"
            ),
        ]

    def __str__(self) -> str:
        owner = self.user.get_username() if self.user_id else "operator"
        return f"{owner} {self.asset.code} {self.kind}"


class Hold(models.Model):
    """Funds reserved under a reference until consumed by trades or released."""

    class Status(models.TextChoices):
        OPEN = "OPEN", "Open"
        CLOSED = "CLOSED", "Closed"

    reference = models.CharField(max_length=REFERENCE_LENGTH, unique=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="holds")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+", db_index=False)
    amount = amount_field(default=0, help_text="Everything ever put on this hold (first hold plus increases).")
    amount_remaining = amount_field(default=0, help_text="Cached sum of this hold's entries.")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.OPEN)
    created_at = models.DateTimeField(db_default=Now())
    updated_at = models.DateTimeField(db_default=Now())
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            models.CheckConstraint(condition=Q(amount_remaining__gte=0), name="wallet_hold_remaining_not_negative"),
            models.CheckConstraint(condition=Q(amount_remaining__lte=F("amount")), name="wallet_hold_remaining_lte_amount"),
            models.CheckConstraint(
                condition=Q(status="OPEN", closed_at__isnull=True)
                | Q(status="CLOSED", amount_remaining=0, closed_at__isnull=False),
                name="wallet_hold_closed_is_empty",
            ),
        ]

    def __str__(self) -> str:
        return self.reference


class TransactionKind(models.TextChoices):
    HOLD = "HOLD", "Hold"
    RELEASE = "RELEASE", "Release"
    TRADE = "TRADE", "Trade"
    MATCH = "MATCH", "Matcher batch (netted trades and releases)"
    DEPOSIT = "DEPOSIT", "Deposit"
    WITHDRAWAL_APPROVE = "WITHDRAWAL_APPROVE", "Withdrawal approved"
    WITHDRAWAL_COMPLETE = "WITHDRAWAL_COMPLETE", "Withdrawal completed"
    ADJUSTMENT = "ADJUSTMENT", "Adjustment"


# Kinds whose reference names one event that happens once: a second
# transaction with the same reference would post it twice.
UNIQUE_REFERENCE_KINDS = (
    TransactionKind.TRADE,
    TransactionKind.MATCH,
    TransactionKind.DEPOSIT,
    TransactionKind.WITHDRAWAL_APPROVE,
    TransactionKind.WITHDRAWAL_COMPLETE,
)


class LedgerTransaction(models.Model):
    """One balanced journal transaction (immutable)."""

    kind = models.CharField(max_length=24, choices=TransactionKind.choices)
    reference = models.CharField(
        max_length=REFERENCE_LENGTH, help_text='What it is about: "order:12", "trade:BTC-USDT:34", "withdrawal:5".'
    )
    memo = models.TextField(blank=True, default="", help_text="Free text; the reason of operator actions.")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="+",
        db_index=False,
        help_text="The operator who did it (admin actions); empty for the system.",
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]
        indexes = [
            models.Index(fields=["reference"], name="wallet_txn_reference"),
            # Most transactions are the system's (no actor): index only the operators' ones.
            models.Index(fields=["actor"], condition=Q(actor__isnull=False), name="wallet_txn_actor"),
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "reference"],
                condition=Q(kind__in=UNIQUE_REFERENCE_KINDS),
                name="wallet_txn_unique_event_reference",
            ),
            models.CheckConstraint(condition=Q(kind__in=TransactionKind.values), name="wallet_txn_kind_valid"),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.kind} {self.reference}"


class LedgerEntry(models.Model):
    """A signed amount moved into (positive) or out of (negative) one account (immutable)."""

    # The references of an entry are checked once per INSERT statement by a
    # trigger (migration 0002) rather than by row-level foreign keys, which
    # cost several times more on bulk inserts: the transaction and account
    # exist, ``asset`` is the account's asset, and an entry names a hold of
    # the account's user and asset exactly when the account is HELD.
    # Transactions, accounts and holds cannot be deleted.
    transaction = models.ForeignKey(
        LedgerTransaction, on_delete=models.PROTECT, related_name="entries", db_constraint=False
    )
    account = models.ForeignKey(
        Account, on_delete=models.PROTECT, related_name="entries", db_constraint=False, db_index=False
    )
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+", db_constraint=False, db_index=False)
    amount = amount_field()
    hold = models.ForeignKey(
        Hold, null=True, blank=True, on_delete=models.PROTECT, related_name="entries", db_constraint=False, db_index=False
    )

    class Meta:
        ordering = ["id"]
        verbose_name_plural = "ledger entries"
        indexes = [
            models.Index(fields=["account", "id"], name="wallet_entry_account_id"),
            models.Index(fields=["hold"], condition=Q(hold__isnull=False), name="wallet_entry_hold"),
        ]
        constraints = [models.CheckConstraint(condition=~Q(amount=0), name="wallet_entry_amount_not_zero")]

    def __str__(self) -> str:
        return f"{self.amount:+f} {self.asset_id} on account {self.account_id}"


class Deposit(models.Model):
    """Money that arrived from outside, credited once per (asset, external txid)."""

    class Source(models.TextChoices):
        OPERATOR = "OPERATOR", "Credited by an operator"
        CUSTODY = "CUSTODY", "Custody webhook"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="deposits")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = amount_field()
    source = models.CharField(max_length=16, choices=Source.choices)
    txid = models.CharField(max_length=128, help_text="External transaction id; the same txid credits only once.")
    memo = models.TextField(blank=True, default="")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["-id"]
        constraints = [
            models.UniqueConstraint(fields=["asset", "txid"], name="wallet_deposit_unique_asset_txid"),
            models.CheckConstraint(condition=Q(amount__gt=0), name="wallet_deposit_amount_positive"),
        ]

    def __str__(self) -> str:
        return f"deposit:{self.pk}"

    @property
    def reference(self) -> str:
        return f"deposit:{self.pk}"


class Withdrawal(models.Model):
    """A user's request to send funds out: REQUESTED -> APPROVED -> COMPLETED, or REJECTED."""

    class Status(models.TextChoices):
        REQUESTED = "REQUESTED", "Requested (funds held)"
        APPROVED = "APPROVED", "Approved (funds with the operator)"
        REJECTED = "REJECTED", "Rejected (funds released)"
        COMPLETED = "COMPLETED", "Completed (sent)"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="withdrawals")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = amount_field()
    address = models.CharField(max_length=128)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.REQUESTED)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    reason = models.TextField(blank=True, default="", help_text="The operator's reason for the last transition.")
    txid = models.CharField(max_length=128, blank=True, default="", help_text="External transaction id once sent.")
    created_at = models.DateTimeField(db_default=Now())
    reviewed_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "id"], name="wallet_withdrawal_status")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="wallet_withdrawal_amount_positive"),
            models.CheckConstraint(
                condition=Q(status__in=["REQUESTED", "APPROVED", "REJECTED", "COMPLETED"]),
                name="wallet_withdrawal_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(status="COMPLETED", completed_at__isnull=False) & ~Q(txid="")
                | ~Q(status="COMPLETED") & Q(txid="", completed_at__isnull=True),
                name="wallet_withdrawal_txid_iff_completed",
            ),
        ]
        # Separate duties: approving lets funds leave the user's account (and
        # needs a second staff member above the four-eyes threshold);
        # completing records that they were sent out.
        permissions = [
            ("approve_withdrawal", "Can approve and reject withdrawals"),
            ("complete_withdrawal", "Can record withdrawals as sent"),
        ]

    def __str__(self) -> str:
        return self.hold_reference

    @property
    def hold_reference(self) -> str:
        return f"withdrawal:{self.pk}"


class Adjustment(LedgerTransaction):
    """Operator corrections (ADJUSTMENT journal transactions), for the back office."""

    class Meta:
        proxy = True


class MoneyAction(models.Model):
    """A staff member's money action in the back office, under the four-eyes rule.

    Crediting a deposit, adjusting a balance and approving a withdrawal are
    asked for here (``wallet.services.four_eyes``). Up to the asset's
    four-eyes threshold the action is EXECUTED at once by whoever asked;
    above it, it waits (PENDING) for a second, different staff member to
    approve it (EXECUTED) or reject it (REJECTED). A PENDING approval of a
    withdrawal that was rejected meanwhile is CANCELED. Nobody acts on their
    own account. The database holds these rules (check constraints); the back
    office shows the rows read-only.
    """

    class Kind(models.TextChoices):
        DEPOSIT_CREDIT = "DEPOSIT_CREDIT", "Credit a deposit"
        BALANCE_ADJUST = "BALANCE_ADJUST", "Adjust a balance"
        WITHDRAWAL_APPROVE = "WITHDRAWAL_APPROVE", "Approve a withdrawal"

    class Status(models.TextChoices):
        PENDING = "PENDING", "Waiting for a second staff member"
        EXECUTED = "EXECUTED", "Executed"
        REJECTED = "REJECTED", "Rejected by the second staff member"
        CANCELED = "CANCELED", "Canceled (the withdrawal was rejected meanwhile)"

    kind = models.CharField(max_length=24, choices=Kind.choices)
    status = models.CharField(max_length=10, choices=Status.choices)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+",
                             help_text="Whose account the money moves on.")
    asset = models.ForeignKey(Asset, on_delete=models.PROTECT, related_name="+")
    amount = amount_field(help_text="Signed for adjustments (negative takes away).")
    txid = models.CharField(max_length=128, blank=True, default="", help_text="A deposit's external transaction id.")
    withdrawal = models.ForeignKey(Withdrawal, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="money_actions")
    reason = models.TextField(help_text="Why, from the staff member who asked; recorded on the journal.")
    four_eyes = models.BooleanField(help_text="Above the asset's threshold: a second staff member decides.")
    requested_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    requested_at = models.DateTimeField(db_default=Now())
    decided_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT,
                                   related_name="+")
    decided_at = models.DateTimeField(null=True, blank=True)
    decision_reason = models.TextField(blank=True, default="")
    deposit = models.ForeignKey(Deposit, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    journal_transaction = models.ForeignKey(LedgerTransaction, null=True, blank=True, on_delete=models.PROTECT,
                                            related_name="+", help_text="The ledger transaction it posted.")

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["id"], name="wallet_moneyaction_pending", condition=Q(status="PENDING"))]
        constraints = [
            models.CheckConstraint(condition=Q(kind__in=["DEPOSIT_CREDIT", "BALANCE_ADJUST", "WITHDRAWAL_APPROVE"]),
                                   name="wallet_moneyaction_kind_valid"),
            models.CheckConstraint(condition=Q(status__in=["PENDING", "EXECUTED", "REJECTED", "CANCELED"]),
                                   name="wallet_moneyaction_status_valid"),
            models.CheckConstraint(condition=~Q(amount=0), name="wallet_moneyaction_amount_not_zero"),
            models.CheckConstraint(condition=~Q(reason=""), name="wallet_moneyaction_reason_required"),
            models.CheckConstraint(condition=Q(kind="WITHDRAWAL_APPROVE", withdrawal__isnull=False)
                                   | ~Q(kind="WITHDRAWAL_APPROVE") & Q(withdrawal__isnull=True),
                                   name="wallet_moneyaction_withdrawal_iff_approval"),
            # Nobody acts on their own account.
            models.CheckConstraint(condition=~Q(requested_by=F("user")), name="wallet_moneyaction_not_own_request"),
            models.CheckConstraint(condition=Q(decided_by__isnull=True) | ~Q(decided_by=F("user")),
                                   name="wallet_moneyaction_not_own_decision"),
            # Four eyes: above the threshold, a second and different person decides.
            models.CheckConstraint(condition=~Q(status="PENDING") | Q(four_eyes=True),
                                   name="wallet_moneyaction_pending_needs_four_eyes"),
            models.CheckConstraint(
                condition=~Q(four_eyes=True, status__in=["EXECUTED", "REJECTED"])
                | Q(decided_by__isnull=False) & ~Q(decided_by=F("requested_by")),
                name="wallet_moneyaction_second_person_decides",
            ),
            models.UniqueConstraint(fields=["withdrawal"], condition=Q(status="PENDING"),
                                    name="wallet_moneyaction_one_pending_per_withdrawal"),
            # One live credit per deposit txid: two requests cannot credit it twice.
            models.UniqueConstraint(fields=["asset", "txid"],
                                    condition=Q(kind="DEPOSIT_CREDIT", status__in=["PENDING", "EXECUTED"]),
                                    name="wallet_moneyaction_one_credit_per_txid"),
        ]

    def __str__(self) -> str:
        return f"money action {self.pk} {self.kind} {self.status}"


class FeeTier(models.Model):
    """A VIP tier: users whose 30-day volume reaches ``volume_30d_min`` pay these rates."""

    name = models.CharField(max_length=64, unique=True)
    volume_30d_min = amount_field(
        help_text="Minimum 30-day traded volume, in the fee volume asset (setting WALLET_FEE_VOLUME_ASSET)."
    )
    maker_fee_rate = models.DecimalField(max_digits=FEE_RATE_DIGITS, decimal_places=FEE_RATE_PLACES)
    taker_fee_rate = models.DecimalField(max_digits=FEE_RATE_DIGITS, decimal_places=FEE_RATE_PLACES)

    class Meta:
        ordering = ["volume_30d_min"]
        constraints = [
            models.UniqueConstraint(fields=["volume_30d_min"], name="wallet_feetier_unique_volume"),
            models.CheckConstraint(condition=Q(volume_30d_min__gte=0), name="wallet_feetier_volume_not_negative"),
            models.CheckConstraint(
                condition=Q(maker_fee_rate__gte=0, maker_fee_rate__lt=1, taker_fee_rate__gte=0, taker_fee_rate__lt=1),
                name="wallet_feetier_rates_in_range",
            ),
        ]

    def __str__(self) -> str:
        return self.name


class FeeOverride(models.Model):
    """Rates agreed with one user, for one market or (market empty) for all markets."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="fee_overrides")
    market = models.ForeignKey(Market, null=True, blank=True, on_delete=models.CASCADE, related_name="+")
    maker_fee_rate = models.DecimalField(max_digits=FEE_RATE_DIGITS, decimal_places=FEE_RATE_PLACES)
    taker_fee_rate = models.DecimalField(max_digits=FEE_RATE_DIGITS, decimal_places=FEE_RATE_PLACES)
    reason = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(db_default=Now())

    class Meta:
        ordering = ["id"]
        constraints = [
            models.UniqueConstraint(fields=["user", "market"], name="wallet_feeoverride_unique", nulls_distinct=False),
            models.CheckConstraint(
                condition=Q(maker_fee_rate__gte=0, maker_fee_rate__lt=1, taker_fee_rate__gte=0, taker_fee_rate__lt=1),
                name="wallet_feeoverride_rates_in_range",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.market or 'all markets'}"
