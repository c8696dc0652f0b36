"""The risk back office: limits per scope, kill switches, the alert queue, a trader's risk page.

Every change goes through risk/services.py (audited there); one-click kill
switches ask for a reason first (exchange/admin_actions.py). Operators have
risk add/change/view, compliance view only (exchange/roles.py).
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import Count, Exists, OuterRef, Q
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join

from exchange.admin_actions import ReasonForm, reason_action
from exchange.audit.admin import AuditedModelAdmin
from exchange.audit.services import audit_context
from exchange.core.errors import ApplicationError
from exchange.core.localcache import config_changed
from exchange.models import Market
from exchange.profiles import UserProfile, kyc_tier_of
from risk import services
from risk.limits import LimitBook
from risk.models import (
    LIMIT_FIELDS,
    AccountLink,
    MarketSwitch,
    RiskAlert,
    RiskLimit,
    SurveillanceExemption,
    SurveillanceRule,
    Trader,
    TradingRestriction,
)

Kind = TradingRestriction.Kind


# ----------------------------------------------------------------- limits


@admin.register(RiskLimit)
class RiskLimitAdmin(admin.ModelAdmin):
    """One row per scope; an empty limit is not set there (a wider scope's applies)."""

    list_display = ("__str__", "scope", *LIMIT_FIELDS, "updated_at")
    list_filter = ("scope",)
    search_fields = ("user__username", "market__symbol")
    autocomplete_fields = ("user",)
    fieldsets = (
        ("Scope (most specific wins, per limit: user, KYC tier, market, global)",
         {"fields": ("scope", "market", "kyc_tier", "user")}),
        ("Limits (empty: not set at this scope)", {"fields": LIMIT_FIELDS}),
        (None, {"fields": ("updated_by", "updated_at")}),
    )

    def get_readonly_fields(self, request, obj=None):
        return ("scope", "market", "kyc_tier", "user", "updated_by", "updated_at") if obj else (
            "updated_by", "updated_at")

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)

        class LimitForm(form):
            def clean(self):
                cleaned = super().clean()
                if obj is None and all(cleaned.get(name) is None for name in LIMIT_FIELDS):
                    raise forms.ValidationError("Set at least one limit.")
                return cleaned

        return LimitForm

    def save_model(self, request, obj, form, change):
        """Through the service (audited): an emptied limit is cleared, an emptied scope deleted."""
        saved = services.risk_limit_set(scope=obj.scope, market=obj.market, kyc_tier=obj.kyc_tier, user=obj.user,
                                        values={name: getattr(obj, name) for name in LIMIT_FIELDS},
                                        actor=request.user, audit=audit_context(request))
        if saved is not None:
            obj.pk = saved.pk

    def delete_model(self, request, obj):
        services.risk_limit_clear(scope=obj.scope, market=obj.market, kyc_tier=obj.kyc_tier, user=obj.user,
                                  actor=request.user, audit=audit_context(request))

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


# ---------------------------------------------------------- kill switches


class RestrictionForm(forms.ModelForm):
    class Meta:
        model = TradingRestriction
        fields = ("kind", "user", "market", "reason")


def _lift(restriction, actor, reason, audit):
    services.restriction_lift(restriction=restriction, reason=reason, actor=actor, audit=audit)


@admin.register(TradingRestriction)
class TradingRestrictionAdmin(admin.ModelAdmin):
    """Kill switches, on and lifted (the history stays). Add one here, lift with the action;
    the whole exchange is halted and resumed with the buttons at the top."""

    form = RestrictionForm
    list_display = ("kind", "target", "state", "reason", "source", "created_by", "created_at", "lifted_at",
                    "lifted_by", "lift_reason")
    list_filter = ("kind", ("lifted_at", admin.EmptyFieldListFilter), "source")
    search_fields = ("user__username", "market__symbol", "reason")
    autocomplete_fields = ("user",)
    actions = [reason_action(
        name="lift", title="Lift (resume)", permission="change", apply=_lift,
        description="The selected kill switches are turned off; halted markets are asked to resume trading.")]
    change_list_template = "admin/risk/tradingrestriction/change_list.html"

    @admin.display(description="on")
    def state(self, obj):
        return "ON" if obj.lifted_at is None else "lifted"

    @admin.display(description="target")
    def target(self, obj):
        return obj.user.username if obj.user_id else obj.market.symbol if obj.market_id else "whole exchange"

    def has_change_permission(self, request, obj=None):
        # Rows are a record: switches are set by "add" and lifted by the action only.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        restriction, created = services.restriction_set(
            kind=obj.kind, user=obj.user, market=obj.market, reason=obj.reason, actor=request.user,
            audit=audit_context(request))
        obj.pk = restriction.pk
        if not created:
            self.message_user(request, "That kill switch was already on; nothing changed.", messages.WARNING)

    def get_urls(self):
        return [
            path("halt-all/", self.admin_site.admin_view(self.exchange_switch), {"halt": True},
                 name="risk_tradingrestriction_halt_all"),
            path("resume-all/", self.admin_site.admin_view(self.exchange_switch), {"halt": False},
                 name="risk_tradingrestriction_resume_all"),
            *super().get_urls(),
        ]

    def exchange_switch(self, request, halt: bool):
        """Halt or resume the whole exchange, after asking for a reason."""
        if not self.has_add_permission(request):
            raise PermissionDenied
        form = ReasonForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            reason = form.cleaned_data["reason"]
            try:
                if halt:
                    _, created = services.restriction_set(kind=Kind.EXCHANGE_HALTED, reason=reason,
                                                          actor=request.user, audit=audit_context(request))
                    done = "Every market asked to halt." if created else "The exchange was already halted."
                else:
                    done = ("The exchange resumed." if services.exchange_resume(
                        reason=reason, actor=request.user, audit=audit_context(request))
                        else "The exchange was not halted.")
                self.message_user(request, done, messages.SUCCESS)
            except ApplicationError as error:
                self.message_user(request, error.message, messages.ERROR)
            return redirect("admin:risk_tradingrestriction_changelist")
        title = "Halt the whole exchange" if halt else "Resume the whole exchange"
        return TemplateResponse(request, "admin/risk/exchange_switch.html", {
            **self.admin_site.each_context(request), "title": title, "form": form,
            "opts": self.model._meta,
            "description": ("Every market's matcher is asked to halt; new orders, amendments and cancels are "
                            "refused at once, and orders queued in the streams are rejected.") if halt else
                           ("Markets halted by the exchange halt are asked to resume trading; markets halted on "
                            "their own stay halted."),
        })


def _halt_market(market, actor, reason, audit):
    services.restriction_set(kind=Kind.MARKET_HALTED, market=market, reason=reason, actor=actor, audit=audit)


def _resume_market(market, actor, reason, audit):
    services.market_resume(market=market, reason=reason, actor=actor, audit=audit)


@admin.register(MarketSwitch)
class MarketSwitchAdmin(admin.ModelAdmin):
    """Markets and their kill switch: halt or resume one with a reason (through its matcher)."""

    list_display = ("symbol", "status", "halted_by_kill_switch")
    search_fields = ("symbol",)
    fields = ("symbol", "status")
    readonly_fields = fields
    actions = [
        reason_action(name="halt", title="Halt", permission="change", apply=_halt_market,
                      description="The markets' matchers are asked to halt; new orders are refused at once and "
                                  "orders queued in their streams are rejected."),
        reason_action(name="resume", title="Resume", permission="change", apply=_resume_market,
                      description="Markets halted with this kill switch are asked to resume trading."),
    ]

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="halted by kill switch", boolean=True)
    def halted_by_kill_switch(self, obj):
        return TradingRestriction.objects.filter(kind=Kind.MARKET_HALTED, market=obj, lifted_at__isnull=True).exists()


# ------------------------------------------------------------------ alerts


class AlertForm(forms.ModelForm):
    class Meta:
        model = RiskAlert
        fields = ("assignee",)


def _resolve(alert, actor, reason, audit):
    services.alert_resolve(alert=alert, note=reason, actor=actor)


@admin.register(RiskAlert)
class RiskAlertAdmin(admin.ModelAdmin):
    """The queue operators work through: filter, acknowledge (takes it), assign, resolve with a note."""

    form = AlertForm
    list_display = ("id", "kind", "severity", "status", "user", "market", "summary", "occurrences", "assignee",
                    "last_seen_at")
    list_filter = ("status", "kind", "severity", "market", ("assignee", admin.RelatedOnlyFieldListFilter))
    search_fields = ("user__username", "counterparty__username", "summary")
    list_select_related = ("user", "market", "assignee")
    autocomplete_fields = ("assignee",)
    readonly_fields = ("kind", "severity", "status", "user_link", "market", "counterparty", "summary",
                       "evidence_pretty", "occurrences", "first_seen_at", "last_seen_at", "restriction",
                       "resolution_note", "resolved_by", "resolved_at")
    fields = ("kind", "severity", "status", "user_link", "market", "counterparty", "summary", "evidence_pretty",
              "occurrences", "first_seen_at", "last_seen_at", "restriction", "assignee", "resolution_note",
              "resolved_by", "resolved_at")
    actions = ["acknowledge", "assign_to_me", reason_action(
        name="resolve", title="Resolve", permission="change", apply=_resolve,
        description="Say what was found and what was done (recorded as the resolution note).")]

    def get_queryset(self, request):
        return super().get_queryset(request).select_related("user", "market", "assignee")

    @admin.display(description="user")
    def user_link(self, obj):
        url = reverse("admin:risk_trader_change", args=[obj.user_id])
        return format_html('<a href="{}">{}</a>', url, obj.user.username)

    @admin.display(description="evidence")
    def evidence_pretty(self, obj):
        return format_html("<pre>{}</pre>", json.dumps(obj.evidence, indent=2))

    @admin.action(description="Acknowledge (and take if unassigned)", permissions=["change"])
    def acknowledge(self, request, queryset):
        self._each(request, queryset, lambda alert: services.alert_acknowledge(alert=alert, actor=request.user))

    @admin.action(description="Assign to me", permissions=["change"])
    def assign_to_me(self, request, queryset):
        self._each(request, queryset, lambda alert: services.alert_assign(alert=alert, assignee=request.user,
                                                                          actor=request.user))

    def _each(self, request, queryset, call):
        done = 0
        for alert in queryset:
            try:
                call(alert)
                done += 1
            except ApplicationError as error:
                self.message_user(request, f"{alert}: {error.message}", messages.ERROR)
        if done:
            self.message_user(request, f"{done} alert(s) updated.", messages.SUCCESS)

    def has_add_permission(self, request):
        return False  # alerts come from the rules

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        if "assignee" in form.changed_data:
            try:
                services.alert_assign(alert=obj, assignee=obj.assignee, actor=request.user)
            except ApplicationError as error:
                self.message_user(request, error.message, messages.ERROR)


# ------------------------------------------------------------ surveillance


class SurveillanceAdmin(AuditedModelAdmin):
    """Surveillance configuration: every change is audited and reaches every
    process's rule cache within about a second (``config_changed``)."""

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        config_changed()

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        config_changed()

    def delete_queryset(self, request, queryset):
        super().delete_queryset(request, queryset)
        config_changed()


@admin.register(SurveillanceRule)
class SurveillanceRuleAdmin(SurveillanceAdmin):
    """A rule's parameters per market (empty market: the default). docs/RISK.md says what each means per rule."""

    audit_prefix = "SURVEILLANCE_RULE"
    list_display = ("kind", "market", "enabled", "auto_action", "min_notional", "window_s", "min_count", "ratio",
                    "max_lifetime_s", "updated_at")
    list_filter = ("kind", "enabled", "auto_action", "market")

    def audit_market(self, obj) -> str:
        return obj.market.symbol if obj.market_id else ""


@admin.register(SurveillanceExemption)
class SurveillanceExemptionAdmin(SurveillanceAdmin):
    audit_prefix = "SURVEILLANCE_EXEMPTION"
    list_display = ("user", "kind", "reason", "created_by", "created_at")
    autocomplete_fields = ("user",)
    readonly_fields = ("created_by", "created_at")

    def audit_subject(self, obj, object_id):
        return obj.user

    def save_model(self, request, obj, form, change):
        if not change:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)


class AccountLinkForm(forms.ModelForm):
    class Meta:
        model = AccountLink
        fields = ("user_a", "user_b", "reason")

    def clean(self):
        """The pair in either order: stored with the lower id first (the table's constraint)."""
        cleaned = super().clean()
        user_a, user_b = cleaned.get("user_a"), cleaned.get("user_b")
        if user_a is not None and user_b is not None and user_a.pk > user_b.pk:
            cleaned["user_a"], cleaned["user_b"] = user_b, user_a
        return cleaned


@admin.register(AccountLink)
class AccountLinkAdmin(SurveillanceAdmin):
    """Accounts that belong together: trades between them are self-dealing (wash-trade rule)."""

    audit_prefix = "ACCOUNT_LINK"
    form = AccountLinkForm
    list_display = ("user_a", "user_b", "reason", "created_by", "created_at")
    search_fields = ("user_a__username", "user_b__username")
    autocomplete_fields = ("user_a", "user_b")
    readonly_fields = ("created_by", "created_at")

    def audit_subject(self, obj, object_id):
        return obj.user_a

    def has_change_permission(self, request, obj=None):
        return obj is None and super().has_change_permission(request, obj)

    def save_model(self, request, obj, form, change):
        """Through the service (it also moves the change token)."""
        link = services.account_link_create(user_a=obj.user_a, user_b=obj.user_b, reason=obj.reason,
                                            actor=request.user)
        obj.pk, obj.created_by = link.pk, link.created_by


# --------------------------------------------------------- a trader's page


class ProfileInline(admin.StackedInline):
    model = UserProfile
    can_delete = False
    fields = ("kyc_tier",)
    verbose_name_plural = "KYC"


class _ReadOnlyInline(admin.TabularInline):
    extra = 0
    can_delete = False
    show_change_link = True

    def has_add_permission(self, request, obj=None):
        return False

    def has_change_permission(self, request, obj=None):
        return False


class RestrictionInline(_ReadOnlyInline):
    model = TradingRestriction
    fk_name = "user"
    fields = ("kind", "reason", "source", "created_by", "created_at", "lifted_at", "lift_reason")
    readonly_fields = fields
    ordering = ("-id",)


class UserLimitInline(_ReadOnlyInline):
    model = RiskLimit
    fk_name = "user"
    fields = LIMIT_FIELDS
    readonly_fields = fields
    verbose_name_plural = "limits set for this user (edit them under Risk limits)"


class AlertInline(_ReadOnlyInline):
    model = RiskAlert
    fk_name = "user"
    fields = ("kind", "severity", "status", "market", "summary", "occurrences", "last_seen_at")
    readonly_fields = fields
    ordering = ("-id",)


def _restrict(kind):
    def apply(trader, actor, reason, audit):
        services.restriction_set(kind=kind, user=trader, reason=reason, actor=actor, audit=audit)
    return apply


def _resume_user(trader, actor, reason, audit):
    services.user_resume(user=trader, reason=reason, actor=actor, audit=audit)


@admin.register(Trader)
class TraderAdmin(admin.ModelAdmin):
    """A user's risk page: trading state, KYC tier, effective limits, restrictions and alerts,
    with the one-click kill switches."""

    list_display = ("username", "trading_state", "kyc_tier", "open_alerts", "date_joined")
    search_fields = ("username", "email")
    fields = ("username", "email", "trading_state", "effective_limits")
    readonly_fields = fields
    inlines = (ProfileInline, RestrictionInline, UserLimitInline, AlertInline)
    actions = [
        reason_action(name="freeze", title="Freeze", permission="change", apply=_restrict(Kind.USER_FROZEN),
                      description="No orders, amendments or cancels; open orders cancelled in every market; orders "
                                  "queued in the streams rejected."),
        reason_action(name="cancel_only", title="Make cancel-only", permission="change",
                      apply=_restrict(Kind.USER_CANCEL_ONLY),
                      description="Cancels only; new orders and amendments refused, queued ones rejected."),
        reason_action(name="resume", title="Resume trading", permission="change", apply=_resume_user,
                      description="Lift the freeze or cancel-only."),
    ]

    def get_queryset(self, request):
        active = TradingRestriction.objects.filter(user=OuterRef("pk"), lifted_at__isnull=True)
        return super().get_queryset(request).select_related("profile").annotate(
            unresolved=Count("risk_alerts", filter=~Q(risk_alerts__status=RiskAlert.Status.RESOLVED)),
            frozen=Exists(active.filter(kind=Kind.USER_FROZEN)),
            cancel_only=Exists(active.filter(kind=Kind.USER_CANCEL_ONLY)))

    def has_add_permission(self, request):
        return False

    def has_delete_permission(self, request, obj=None):
        return False

    @admin.display(description="KYC tier")
    def kyc_tier(self, obj):
        return getattr(getattr(obj, "profile", None), "kyc_tier", 0)

    @admin.display(description="open alerts", ordering="unresolved")
    def open_alerts(self, obj):
        return obj.unresolved

    @admin.display(description="trading")
    def trading_state(self, obj):
        return "FROZEN" if obj.frozen else "CANCEL_ONLY" if obj.cancel_only else "ACTIVE"

    @admin.display(description="effective limits (per market)")
    def effective_limits(self, obj):
        book = LimitBook(list(RiskLimit.objects.all()))
        tier = kyc_tier_of(obj.pk)
        rows = []
        for market in Market.objects.order_by("symbol"):
            limits = book.effective(user_id=obj.pk, kyc_tier=tier, market_id=market.pk)
            set_ = [f"{name} {getattr(limits, name)} ({limits.scopes[name].lower()})" for name in LIMIT_FIELDS
                    if getattr(limits, name) is not None]
            rows.append((market.symbol, ", ".join(set_) or "no limit"))
        return format_html("<table>{}</table>", format_html_join("", "<tr><th>{}</th><td>{}</td></tr>", rows))
