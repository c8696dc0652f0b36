"""Back office for the ledger.

Accounts, the journal and holds are read-only, amounts at their asset's
precision. Money moves only through forms and actions that call
``wallet.services.four_eyes``, each with a reason stored with the staff
member on the journal transaction: crediting a deposit (the "add" page of
Deposits), adjusting a balance (the "add" page of Adjustments), and
approving, rejecting or completing withdrawals (actions on the withdrawal
queue, which shows REQUESTED withdrawals by default). Above an asset's
four-eyes threshold a credit, an adjustment or an approval waits under
"Money actions" until a second staff member approves or rejects it there.
"""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Exists, OuterRef
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from exchange.admin_actions import reason_action
from exchange.audit.admin import AuditedModelAdmin
from exchange.audit.services import audit_context
from exchange.backoffice.display import NormalizedDecimalsForm, amount_column, amount_text, asset_places
from exchange.core.admin import ReadOnlyAdmin
from exchange.core.errors import ApplicationError
from exchange.models import Asset
from wallet.models import (
    Account,
    Adjustment,
    Deposit,
    FeeOverride,
    FeeTier,
    Hold,
    LedgerEntry,
    LedgerTransaction,
    MoneyAction,
    TransactionKind,
    Withdrawal,
)
from wallet.services.four_eyes import (
    PERMISSIONS,
    money_action_approve,
    money_action_reject,
    money_action_request,
    withdrawal_complete_by_staff,
    withdrawal_reject_by_staff,
)

FORM_TEMPLATE = "admin/wallet/service_form.html"


def _render_form(model_admin, request, form, *, title: str, submit: str, hidden: dict | None = None):
    pairs = [
        (name, value)
        for name, values in (hidden or {}).items()
        for value in (values if isinstance(values, list) else [values])
    ]
    context = {
        **model_admin.admin_site.each_context(request),
        "title": title,
        "form": form,
        "submit": submit,
        "hidden": pairs,
        "opts": model_admin.model._meta,
        "media": model_admin.media + form.media,
    }
    return TemplateResponse(request, FORM_TEMPLATE, context)


def _call_service(form, call):
    """Run ``call()``; an ApplicationError becomes a form error. Returns the result or None."""
    try:
        return call()
    except ApplicationError as error:
        form.add_error(error.field if error.field in form.fields else None, error.message)
        return None


def _changelist(model_admin) -> HttpResponseRedirect:
    opts = model_admin.model._meta
    return HttpResponseRedirect(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist"))


def _report(model_admin, request, action: MoneyAction, done: str) -> None:
    """Say what became of a money action: done now, or waiting for a second staff member."""
    if action.status == MoneyAction.Status.PENDING:
        amount = amount_text(action.amount, action.asset.precision)
        model_admin.message_user(request, f"{action.get_kind_display()} of {amount} {action.asset} for {action.user} "
                                          f"is above the four-eyes threshold: it waits for a second staff member "
                                          f"(money action {action.pk}).", messages.WARNING)
    else:
        model_admin.message_user(request, done, messages.SUCCESS)


BALANCE = amount_column("balance", asset_places)
AMOUNT = amount_column("amount", asset_places)


# -- read-only ledger ---------------------------------------------------------------------


@admin.register(Account)
class AccountAdmin(ReadOnlyAdmin):
    list_display = ("id", "owner", "asset", "kind", BALANCE, "updated_at")
    fields = ("user", "asset", "kind", BALANCE, "created_at", "updated_at")
    readonly_fields = fields
    list_filter = ("kind", "asset")
    search_fields = ("user__username",)
    list_select_related = ("user", "asset")
    show_full_result_count = False

    @admin.display(description="owner")
    def owner(self, account):
        return account.user.get_username() if account.user_id else "operator"


class LedgerEntryInline(admin.TabularInline):
    model = LedgerEntry
    fields = ("account", "asset", AMOUNT, "hold")
    readonly_fields = fields
    extra = 0
    can_delete = False

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(LedgerTransaction)
class LedgerTransactionAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "kind", "reference", "actor", "memo")
    list_filter = ("kind",)
    search_fields = ("=reference", "memo")
    list_select_related = ("actor",)
    inlines = [LedgerEntryInline]
    show_full_result_count = False


@admin.register(LedgerEntry)
class LedgerEntryAdmin(ReadOnlyAdmin):
    list_display = ("id", "transaction", "account", "asset", AMOUNT, "hold")
    fields = ("transaction", "account", "asset", AMOUNT, "hold")
    readonly_fields = fields
    list_filter = ("asset", "account__kind")
    search_fields = ("=transaction__reference", "=hold__reference")
    list_select_related = ("transaction", "account__user", "account__asset", "asset", "hold")
    show_full_result_count = False


@admin.register(Hold)
class HoldAdmin(ReadOnlyAdmin):
    list_display = ("reference", "user", "asset", AMOUNT, amount_column("amount_remaining", asset_places,
                                                                         description="remaining"),
                    "status", "created_at", "closed_at")
    list_filter = ("status", "asset")
    search_fields = ("=reference", "user__username")
    list_select_related = ("user", "asset")
    show_full_result_count = False


# -- deposits ---------------------------------------------------------------------------------


class DepositCreditForm(forms.Form):
    user = forms.ModelChoiceField(queryset=get_user_model().objects.order_by("username"))
    asset = forms.ModelChoiceField(queryset=Asset.objects.order_by("code"))
    amount = forms.DecimalField(max_digits=38, decimal_places=18, min_value=0)
    txid = forms.CharField(max_length=128, label="External transaction id",
                           help_text="An asset and txid is credited once.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="Recorded on the journal.")


@admin.register(Deposit)
class DepositAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "user", "asset", AMOUNT, "source", "txid", "created_by")
    fields = ("user", "asset", AMOUNT, "source", "txid", "memo", "created_by", "created_at")
    readonly_fields = fields
    list_filter = ("source", "asset")
    search_fields = ("=txid", "user__username")
    list_select_related = ("user", "asset", "created_by")

    def has_add_permission(self, request):
        return request.user.has_perm("wallet.add_deposit")

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = DepositCreditForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            action = _call_service(form, lambda: money_action_request(
                kind=MoneyAction.Kind.DEPOSIT_CREDIT, actor=request.user, user=data["user"], asset=data["asset"],
                amount=data["amount"], txid=data["txid"], reason=data["reason"], audit=audit_context(request),
            ))
            if action is not None:
                if action.deposit is not None:
                    self.log_addition(request, action.deposit, f"Credited: {data['reason']}")
                _report(self, request, action, f"Credited {amount_text(action.amount, action.asset.precision)} "
                                               f"{action.asset} to {action.user}.")
                return _changelist(self)
        return _render_form(self, request, form, title="Credit a deposit", submit="Credit")


# -- adjustments -----------------------------------------------------------------------------


class BalanceAdjustForm(forms.Form):
    user = forms.ModelChoiceField(queryset=get_user_model().objects.order_by("username"))
    asset = forms.ModelChoiceField(queryset=Asset.objects.order_by("code"))
    amount = forms.DecimalField(max_digits=38, decimal_places=18,
                                help_text="Added to the user's available balance; negative to take away.")
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="Required; recorded on the journal.")


@admin.register(Adjustment)
class AdjustmentAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "reference", "actor", "memo")
    search_fields = ("=reference", "memo")
    list_select_related = ("actor",)
    inlines = [LedgerEntryInline]

    def get_queryset(self, request):
        return super().get_queryset(request).filter(kind=TransactionKind.ADJUSTMENT)

    def has_add_permission(self, request):
        return request.user.has_perm("wallet.add_adjustment")

    def add_view(self, request, form_url="", extra_context=None):
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = BalanceAdjustForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            action = _call_service(form, lambda: money_action_request(
                kind=MoneyAction.Kind.BALANCE_ADJUST, actor=request.user, user=data["user"], asset=data["asset"],
                amount=data["amount"], reason=data["reason"], audit=audit_context(request),
            ))
            if action is not None:
                if action.journal_transaction is not None:
                    self.log_addition(request, action.journal_transaction, f"Adjusted: {data['reason']}")
                _report(self, request, action, f"Adjusted {data['user']}'s {data['asset']} by "
                                               f"{amount_text(action.amount, action.asset.precision)}.")
                return _changelist(self)
        return _render_form(self, request, form, title="Adjust a balance", submit="Adjust")


# -- withdrawals -----------------------------------------------------------------------------


class WithdrawalStatusFilter(admin.SimpleListFilter):
    """The approval queue: REQUESTED unless another status (or all) is chosen."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [*Withdrawal.Status.choices, ("all", "All")]

    def choices(self, changelist):
        value = self.value() or Withdrawal.Status.REQUESTED
        for lookup, title in self.lookup_choices:
            yield {
                "selected": value == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }

    def queryset(self, request, queryset):
        value = self.value() or Withdrawal.Status.REQUESTED
        return queryset if value == "all" else queryset.filter(status=value)


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), help_text="Required; recorded on the journal.")


class CompleteForm(ReasonForm):
    txid = forms.CharField(max_length=128, label="External transaction id")


def _withdrawal_action(name: str, *, verb: str, form_class, service, permission: str, single: bool = False):
    """An action on the withdrawal queue asking for a reason (and a txid to complete); ``service``
    returns the withdrawal, or a MoneyAction when the approval waits for a second staff member."""

    def action(model_admin, request, queryset):
        if single and queryset.count() != 1:
            model_admin.message_user(request, f"Select exactly one withdrawal to {verb}.", messages.ERROR)
            return None
        form = form_class(request.POST if "apply" in request.POST else None)
        if form.is_bound and form.is_valid():
            done, failed = 0, []
            for withdrawal in queryset.order_by("id"):
                try:
                    outcome = service(withdrawal=withdrawal, actor=request.user, audit=audit_context(request),
                                      **form.cleaned_data)
                except ApplicationError as error:
                    failed.append(f"{withdrawal.pk}: {error.message}")
                    continue
                if isinstance(outcome, MoneyAction) and outcome.status == MoneyAction.Status.PENDING:
                    _report(model_admin, request, outcome, "")
                    continue
                model_admin.log_change(request, withdrawal, f"{verb.capitalize()}d: {form.cleaned_data['reason']}")
                done += 1
            if done:
                model_admin.message_user(request, f"{verb.capitalize()}d {done} withdrawal(s).", messages.SUCCESS)
            for failure in failed:
                model_admin.message_user(request, f"Not {verb}d: {failure}", messages.ERROR)
            return None
        hidden = {"action": name, "apply": "1", admin.helpers.ACTION_CHECKBOX_NAME: [w.pk for w in queryset]}
        count = queryset.count()
        return _render_form(model_admin, request, form, title=f"{verb.capitalize()} {count} withdrawal(s)",
                            submit=verb.capitalize(), hidden=hidden)

    action.__name__ = name
    return admin.action(description=f"{verb.capitalize()} selected withdrawals", permissions=[permission])(action)


def _approve(*, withdrawal, actor, reason, audit) -> MoneyAction:
    return money_action_request(kind=MoneyAction.Kind.WITHDRAWAL_APPROVE, withdrawal=withdrawal, actor=actor,
                                reason=reason, audit=audit)


@admin.register(Withdrawal)
class WithdrawalAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "user", "asset", AMOUNT, "address", "status", "awaiting_second_approval",
                    "reviewed_by", "txid")
    list_filter = (WithdrawalStatusFilter, "asset")
    search_fields = ("=id", "user__username", "address", "=txid")
    list_select_related = ("user", "asset", "reviewed_by")
    fields = ("user", "asset", AMOUNT, "address", "status", "reviewed_by", "reason", "txid", "created_at",
              "reviewed_at", "completed_at")
    readonly_fields = fields
    actions = [
        _withdrawal_action("approve_selected", verb="approve", form_class=ReasonForm, service=_approve,
                           permission="approve"),
        _withdrawal_action("reject_selected", verb="reject", form_class=ReasonForm,
                           service=withdrawal_reject_by_staff, permission="approve"),
        _withdrawal_action("complete_selected", verb="complete", form_class=CompleteForm,
                           service=withdrawal_complete_by_staff, permission="complete", single=True),
    ]

    def get_queryset(self, request):
        pending = MoneyAction.objects.filter(withdrawal=OuterRef("pk"), status=MoneyAction.Status.PENDING)
        return super().get_queryset(request).annotate(awaiting_approval=Exists(pending))

    @admin.display(description="awaiting 2nd approval", boolean=True)
    def awaiting_second_approval(self, withdrawal) -> bool:
        return withdrawal.awaiting_approval

    def has_approve_permission(self, request):
        return request.user.has_perm("wallet.approve_withdrawal")

    def has_complete_permission(self, request):
        return request.user.has_perm("wallet.complete_withdrawal")


# -- four eyes ---------------------------------------------------------------------------------


@admin.register(MoneyAction)
class MoneyActionAdmin(ReadOnlyAdmin):
    """Every staff money action; those above the threshold wait here for a second staff member."""

    list_display = ("id", "requested_at", "kind", "status", "user", "asset", AMOUNT, "requested_by", "reason",
                    "decided_by", "four_eyes")
    list_filter = ("status", "kind", "asset", "four_eyes")
    search_fields = ("=id", "user__username", "requested_by__username", "=txid")
    list_select_related = ("user", "asset", "requested_by", "decided_by")
    fields = ("kind", "status", "user", "asset", AMOUNT, "txid", "withdrawal", "reason", "four_eyes", "requested_by",
              "requested_at", "decided_by", "decided_at", "decision_reason", "deposit", "journal_transaction")
    readonly_fields = fields
    actions = [
        reason_action(name="approve_selected", title="Approve (second staff member)",
                      description="Each action runs now, in your name as the second staff member.",
                      permission="decide",
                      apply=lambda action, actor, reason, audit: money_action_approve(
                          action=action, actor=actor, reason=reason, audit=audit)),
        reason_action(name="reject_selected", title="Reject (second staff member)",
                      description="No money moves; the request is closed.", permission="decide",
                      apply=lambda action, actor, reason, audit: money_action_reject(
                          action=action, actor=actor, reason=reason, audit=audit)),
    ]

    def has_decide_permission(self, request):
        return any(request.user.has_perm(permission) for permission in PERMISSIONS.values())


# -- fee schedule (configuration, editable) ------------------------------------------------


@admin.register(FeeTier)
class FeeTierAdmin(AuditedModelAdmin):
    audit_prefix = "FEE_TIER"
    form = NormalizedDecimalsForm
    list_display = ("name", "volume_30d_min", "maker_fee_rate", "taker_fee_rate")


@admin.register(FeeOverride)
class FeeOverrideAdmin(AuditedModelAdmin):
    audit_prefix = "FEE_OVERRIDE"
    form = NormalizedDecimalsForm
    list_display = ("user", "market", "maker_fee_rate", "taker_fee_rate", "reason", "created_at")
    list_filter = ("market",)
    search_fields = ("user__username",)
    autocomplete_fields = ("user",)
    list_select_related = ("user", "market")
    # Set by the database (db_default): the add form asked for it and could not be saved without it.
    readonly_fields = ("created_at",)

    def audit_market(self, override) -> str:
        return override.market.symbol if override.market_id else ""

    def audit_subject(self, override, object_id):
        return override.user_id
