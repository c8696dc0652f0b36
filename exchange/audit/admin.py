"""Back office of the audit trail, and the audited base every editable admin page uses.

- ``AuditedModelAdmin``: every add, change and delete made on its pages
  writes an audit row (<PREFIX>_CREATE / _UPDATE / _DELETE, with the fields
  before and after) in the admin's own transaction. Assets, markets,
  branding, fee tiers and overrides, users and roles use it.
- The audit log, its checkpoints and chain are read-only for everyone.
- Compliance exports: a form page (Compliance role only) streaming the
  same files as the API.
- Legal holds: operators place them (with a reason) and release them; a
  hold is never edited or deleted.
"""

from __future__ import annotations

import json

from django import forms
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db import transaction
from django.template.response import TemplateResponse
from django.urls import path
from django.utils.html import format_html

from exchange.admin_actions import reason_action
from exchange.audit import actions
from exchange.audit.exports import FILTERS, FORMATS, TABLES, export_request, export_start
from exchange.audit.models import AuditCheckpoint, AuditLog, LegalHold
from exchange.audit.permissions import is_compliance
from exchange.audit.retention import legal_hold_release, legal_hold_set
from exchange.audit.services import audit_context, audit_log_record, changed_fields, snapshot
from exchange.audit.streaming import export_response
from exchange.core.admin import ReadOnlyAdmin
from exchange.core.errors import ApplicationError

FORM_TEMPLATE = "admin/wallet/service_form.html"


class AuditedModelAdmin(admin.ModelAdmin):
    """A ModelAdmin whose adds, changes and deletes are audited (set ``audit_prefix``, e.g. "MARKET").

    ``before`` is read from the database when the form is saved and
    ``after`` once the object and its many-to-many fields are saved; an
    update records only the fields that changed (timestamps that change on
    every save aside) and nothing when none did. Subclasses refine what is
    recorded with ``audit_snapshot``, ``audit_rows``, ``audit_market`` and
    ``audit_subject``.
    """

    audit_prefix = ""

    def audit_snapshot(self, obj) -> dict:
        return snapshot(obj)

    def audit_market(self, obj) -> str:
        return ""

    def audit_subject(self, obj, object_id):
        """The user the change concerns, if any (``object_id``: the object's key, kept past a delete)."""
        return None

    def audit_rows(self, obj, before: dict | None, after: dict | None) -> list[tuple[str, dict | None, dict | None]]:
        """(action, before, after) of each row to write for this change."""
        if before is None:
            return [(f"{self.audit_prefix}_CREATE", None, after)]
        if after is None:
            return [(f"{self.audit_prefix}_DELETE", before, None)]
        ignored = {f.attname for f in obj._meta.concrete_fields if getattr(f, "auto_now", False)}
        changed = [name for name in changed_fields(before, after) if name not in ignored]
        if not changed:
            return []
        return [(f"{self.audit_prefix}_UPDATE", {name: before.get(name) for name in changed},
                 {name: after.get(name) for name in changed})]

    def audit_record(self, request, obj, object_id, before: dict | None, after: dict | None) -> None:
        assert self.audit_prefix, f"{type(self).__name__} must set audit_prefix"
        for action, row_before, row_after in self.audit_rows(obj, before, after):
            audit_log_record(action=action, object_type=obj._meta.label_lower, object_id=object_id,
                             before=row_before, after=row_after, market=self.audit_market(obj),
                             subject_user=self.audit_subject(obj, object_id), **audit_context(request))

    def save_form(self, request, form, change):
        obj = super().save_form(request, form, change)
        current = type(obj)._default_manager.filter(pk=obj.pk).first() if change else None
        obj._audit_before = self.audit_snapshot(current) if current is not None else None
        return obj

    def save_related(self, request, form, formsets, change):
        super().save_related(request, form, formsets, change)
        obj = form.instance
        self.audit_record(request, obj, obj.pk, getattr(obj, "_audit_before", None), self.audit_snapshot(obj))

    def delete_model(self, request, obj):
        object_id, before = obj.pk, self.audit_snapshot(obj)
        super().delete_model(request, obj)
        self.audit_record(request, obj, object_id, before, None)

    def delete_queryset(self, request, queryset):
        with transaction.atomic():
            doomed = [(obj, obj.pk, self.audit_snapshot(obj)) for obj in queryset]
            super().delete_queryset(request, queryset)
            for obj, object_id, before in doomed:
                self.audit_record(request, obj, object_id, before, None)


# -- the audit log -------------------------------------------------------------------------


class ActionFilter(admin.SimpleListFilter):
    title = "action"
    parameter_name = "action"

    def lookups(self, request, model_admin):
        return [(code, code) for code in sorted(actions.ACTIONS)]

    def queryset(self, request, queryset):
        return queryset.filter(action=self.value()) if self.value() else queryset


@admin.register(AuditLog)
class AuditLogAdmin(ReadOnlyAdmin):
    list_display = ("id", "created_at", "action", "object_type", "object_id", "market", "actor", "subject_user_id",
                    "ip")
    list_filter = (ActionFilter, "object_type", "market")
    search_fields = ("=object_id", "=request_id", "=actor_system", "=market")
    show_full_result_count = False
    fields = ("id", "created_at", "txid", "action", "object_type", "object_id", "market", "actor",
              "actor_user_id", "actor_api_key_id", "actor_staff_id", "actor_system", "subject_user_id", "ip",
              "user_agent", "request_id", "before_json", "after_json")
    readonly_fields = fields

    @admin.display(description="actor")
    def actor(self, row: AuditLog) -> str:
        return row.actor_label

    @admin.display(description="before")
    def before_json(self, row: AuditLog):
        return format_html("<pre>{}</pre>", json.dumps(row.before, indent=2, ensure_ascii=False))

    @admin.display(description="after")
    def after_json(self, row: AuditLog):
        return format_html("<pre>{}</pre>", json.dumps(row.after, indent=2, ensure_ascii=False))

    def get_urls(self):
        return [path("export/", self.admin_site.admin_view(self.export_view), name="exchange_auditlog_export"),
                *super().get_urls()]

    def changelist_view(self, request, extra_context=None):
        extra_context = {**(extra_context or {}), "can_export": is_compliance(request.user)}
        return super().changelist_view(request, extra_context)

    def export_view(self, request):
        """Compliance exports in the back office: the API's files, from a form (POST, so a link cannot start one)."""
        if not is_compliance(request.user):
            raise PermissionDenied
        form = ExportForm(request.POST or None)
        if request.method == "POST" and form.is_valid():
            data = form.cleaned_data
            params = {name: data.get(name) or "" for name in ("format", *FILTERS)}
            try:
                export = export_request(table=data["table"], params=params)
            except ApplicationError as error:
                form.add_error(error.field if error.field in form.fields else None, error.message)
            else:
                return export_response(export, export_start(export, audit=audit_context(request)))
        return TemplateResponse(request, FORM_TEMPLATE, {
            **self.admin_site.each_context(request), "title": "Compliance export", "form": form,
            "submit": "Export", "hidden": [], "opts": self.model._meta, "media": self.media + form.media,
        })


class ExportForm(forms.Form):
    table = forms.ChoiceField(choices=[(name, name) for name in TABLES])
    format = forms.ChoiceField(choices=[(name, name) for name in FORMATS])
    start = forms.CharField(required=False, help_text="From (inclusive): 2026-01-01 or 2026-01-01T09:00:00Z (UTC).")
    end = forms.CharField(required=False, help_text="Until (exclusive).")
    actor = forms.CharField(required=False, help_text="A username, or system:<process> (audit log; ledger: operator).")
    action = forms.CharField(required=False, help_text="Action codes, comma-separated (audit log), or journal kinds "
                                                       "(ledger).")
    market = forms.CharField(required=False, help_text="A symbol such as BTC-USDT (audit log, orders, trades).")
    user = forms.CharField(required=False, help_text="Whose data: a username.")


@admin.register(AuditCheckpoint)
class AuditCheckpointAdmin(ReadOnlyAdmin):
    list_display = ("seq", "log_id", "cutoff", "created_at")


# -- legal holds -----------------------------------------------------------------------------


class LegalHoldForm(forms.ModelForm):
    class Meta:
        model = LegalHold
        fields = ("user", "starts_at", "ends_at", "reason")


@admin.register(LegalHold)
class LegalHoldAdmin(admin.ModelAdmin):
    """Operators place a hold (user and/or period, with a reason) and release it; nothing else."""

    form = LegalHoldForm
    list_display = ("id", "user", "starts_at", "ends_at", "reason", "created_by", "created_at", "released_at")
    list_filter = (("released_at", admin.EmptyFieldListFilter),)
    search_fields = ("user__username", "reason")
    list_select_related = ("user", "created_by")
    raw_id_fields = ("user",)
    actions = [reason_action(
        name="release_selected", title="Release legal holds",
        description="The retention task may delete what these holds kept once nothing else keeps it.",
        permission="change",
        apply=lambda hold, actor, reason, audit: legal_hold_release(hold=hold, actor=actor, reason=reason,
                                                                   audit=audit),
    )]

    def get_readonly_fields(self, request, obj=None):
        if obj is None:
            return ()
        return ("user", "starts_at", "ends_at", "reason", "created_by", "created_at", "released_at", "released_by",
                "release_reason")

    def get_fields(self, request, obj=None):
        return self.get_readonly_fields(request, obj) or ("user", "starts_at", "ends_at", "reason")

    def has_change_permission(self, request, obj=None):
        # A hold's page is read-only; the list keeps the release action.
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request, obj=None):
        return False

    def save_model(self, request, obj, form, change):
        assert not change, "legal holds are never edited"
        data = form.cleaned_data
        hold = legal_hold_set(user=data["user"], starts_at=data["starts_at"], ends_at=data["ends_at"],
                              reason=data["reason"], actor=request.user, audit=audit_context(request))
        obj.pk = hold.pk
        obj._state.adding = False
