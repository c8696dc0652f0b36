"""The back office's admin site: sign-in with lockout and a TOTP second factor, and the dashboard.

``BackOfficeSite`` is Django's ``admin.site`` (``BackOfficeAdminConfig``
makes it the default site), so every ``@admin.register`` lands here.

- Sign-in (``StaffAuthenticationForm``): username, password and, once the
  staff member has an authenticator, its code, in one form. Failures count
  towards the lockout of ``exchange.accounts.lockout`` whatever failed.
- A staff member without an authenticator is signed in but may only enroll
  one (``/admin/two-factor/``); every other page needs a session verified
  with a code (``has_permission``).
- The index is the operators' dashboard (``exchange.backoffice.dashboard``).
"""

from __future__ import annotations

from functools import update_wrapper

from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import REDIRECT_FIELD_NAME, authenticate
from django.contrib.auth import login as auth_login
from django.contrib.auth.views import LoginView, redirect_to_login
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_protect
from django.views.decorators.debug import sensitive_variables

from exchange.accounts.lockout import lockout_message, login_locked_out
from exchange.accounts.twofactor import (
    base32_key,
    otp_session_login,
    qr_code_svg,
    session_verified,
    totp_device,
    totp_enroll_begin,
    totp_enroll_confirm,
    totp_pending,
    totp_verify,
)
from exchange.audit.services import audit_context
from exchange.core.errors import ApplicationError


class StaffAuthenticationForm(AdminAuthenticationForm):
    otp_token = forms.CharField(
        label="Authenticator code", required=False, max_length=8, strip=True,
        widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "size": 8}),
        help_text="The 6 digits your authenticator app shows. Leave empty at your very first sign-in: you will "
                  "set the app up next.",
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "locked_out": "locked out",
        "otp_required": "Enter the code from your authenticator app.",
        "otp_invalid": "The authenticator code is wrong or was already used; wait for the next one.",
    }

    def __init__(self, request=None, *args, **kwargs):
        super().__init__(request, *args, **kwargs)
        self.otp_device = None

    @sensitive_variables()
    def clean(self):
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if username is None or not password:
            return self.cleaned_data
        self.user_cache = authenticate(self.request, username=username, password=password)
        if self.user_cache is None:
            if login_locked_out(self.request):
                raise ValidationError(lockout_message(), code="locked_out")
            raise self.get_invalid_login_error()
        self.confirm_login_allowed(self.user_cache)
        if totp_device(self.user_cache) is not None:
            token = self.cleaned_data.get("otp_token")
            if not token:
                raise ValidationError(self.error_messages["otp_required"], code="otp_required")
            try:
                self.otp_device = totp_verify(user=self.user_cache, token=token, request=self.request)
            except ApplicationError:
                raise ValidationError(self.error_messages["otp_invalid"], code="otp_invalid") from None
        return self.cleaned_data


class StaffLoginView(LoginView):
    def form_valid(self, form):
        auth_login(self.request, form.get_user())
        if form.otp_device is not None:
            otp_session_login(self.request, form.otp_device)
            return HttpResponseRedirect(self.get_success_url())
        return HttpResponseRedirect(reverse("admin:otp_setup"))


class TotpConfirmForm(forms.Form):
    otp_token = forms.CharField(label="Code", max_length=8, strip=True,
                                widget=forms.TextInput(attrs={"autocomplete": "one-time-code", "inputmode": "numeric",
                                                              "autofocus": True, "size": 8}))


class BackOfficeSite(admin.AdminSite):
    site_header = "Exchange back office"
    site_title = "Exchange back office"
    index_title = "Operations"
    login_form = StaffAuthenticationForm
    login_template = "admin/login.html"
    index_template = "admin/backoffice_index.html"

    def has_permission(self, request):
        return super().has_permission(request) and session_verified(request)

    def _staff_without_second_factor(self, request) -> bool:
        user = request.user
        return user.is_active and user.is_staff and not session_verified(request)

    def admin_view(self, view, cacheable=False):
        wrapped = super().admin_view(view, cacheable)

        def inner(request, *args, **kwargs):
            # Signed in with a password only: the enrollment page, or signing out.
            if self._staff_without_second_factor(request):
                if request.path == reverse("admin:logout", current_app=self.name):
                    return view(request, *args, **kwargs)
                return HttpResponseRedirect(reverse("admin:otp_setup", current_app=self.name))
            return wrapped(request, *args, **kwargs)

        return update_wrapper(inner, wrapped)

    def get_urls(self):
        return [
            path("two-factor/", csrf_protect(never_cache(self.otp_setup_view)), name="otp_setup"),
            *super().get_urls(),
        ]

    def login(self, request, extra_context=None):
        if request.method == "GET" and self.has_permission(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        context = {
            **self.each_context(request),
            "title": "Log in",
            "subtitle": None,
            "app_path": request.get_full_path(),
            "username": request.user.get_username(),
        }
        if REDIRECT_FIELD_NAME not in request.GET and REDIRECT_FIELD_NAME not in request.POST:
            context[REDIRECT_FIELD_NAME] = reverse("admin:index", current_app=self.name)
        context.update(extra_context or {})
        request.current_app = self.name
        return StaffLoginView.as_view(extra_context=context, authentication_form=self.login_form,
                                      template_name=self.login_template)(request)

    def otp_setup_view(self, request):
        """Enroll an authenticator: staff signed in with their password only land here."""
        user = request.user
        if not (user.is_active and user.is_staff):
            return redirect_to_login(request.get_full_path(), reverse("admin:login", current_app=self.name))
        if session_verified(request):
            return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        if totp_device(user) is not None:
            # Has an authenticator but this session never gave a code: sign in again with it.
            from django.contrib.auth import logout

            logout(request)
            return redirect_to_login(reverse("admin:index"), reverse("admin:login", current_app=self.name))
        form = TotpConfirmForm(request.POST or None)
        device = totp_pending(user)
        if request.method == "POST" and device is not None and form.is_valid():
            try:
                device = totp_enroll_confirm(user=user, token=form.cleaned_data["otp_token"],
                                             audit=audit_context(request))
            except ApplicationError as error:
                form.add_error("otp_token", error.message)
            else:
                otp_session_login(request, device)
                return HttpResponseRedirect(reverse("admin:index", current_app=self.name))
        if device is None:
            device = totp_enroll_begin(user=user)
        return TemplateResponse(request, "admin/otp_setup.html", {
            **self.each_context(request), "title": "Set up two-factor authentication", "form": form,
            "qr_svg": qr_code_svg(device), "key": base32_key(device), "config_url": device.config_url,
        })

    def index(self, request, extra_context=None):
        from exchange.backoffice.dashboard import dashboard_context

        return super().index(request, {**dashboard_context(request), **(extra_context or {})})
