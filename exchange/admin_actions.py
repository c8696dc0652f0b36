"""Admin actions that must say why: an intermediate page asks for a reason."""

from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.template.response import TemplateResponse

from exchange.audit.services import audit_context
from exchange.core.errors import ApplicationError


class ReasonForm(forms.Form):
    reason = forms.CharField(widget=forms.Textarea(attrs={"rows": 3, "cols": 60}), min_length=5,
                             help_text="Recorded with the change for the audit trail.")


def reason_action(*, name: str, title: str, description: str, permission: str, apply):
    """An admin action that asks for a reason, then calls ``apply(obj, actor, reason, audit)``
    (a service; ``audit`` is the request's ``audit_context``) for each selected object and
    reports errors per object; a text ``apply`` returns is shown as a message."""

    def action(modeladmin, request, queryset):
        form = ReasonForm(request.POST if request.POST.get("confirm") else None)
        if request.POST.get("confirm") and form.is_valid():
            done = 0
            for obj in queryset:
                try:
                    outcome = apply(obj, request.user, form.cleaned_data["reason"], audit_context(request))
                    done += 1
                except ApplicationError as exc:
                    modeladmin.message_user(request, f"{obj}: {exc.message}", messages.ERROR)
                    continue
                if isinstance(outcome, str):
                    modeladmin.message_user(request, outcome, messages.INFO)
            if done:
                modeladmin.message_user(request, f"{title}: {done} requested.", messages.SUCCESS)
            return None
        return TemplateResponse(request, "admin/reason_action.html", {
            **modeladmin.admin_site.each_context(request),
            "title": title, "description": description, "queryset": queryset, "form": form, "action": name,
            "opts": modeladmin.model._meta,
        })

    action.__name__ = name
    return admin.action(description=title, permissions=[permission])(action)
