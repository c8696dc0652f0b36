from django.urls import path

from exchange.accounts.api import views

urlpatterns = [
    path("register", views.RegisterApi.as_view(), name="auth-register"),
    path("login", views.LoginApi.as_view(), name="auth-login"),
    path("logout", views.LogoutApi.as_view(), name="auth-logout"),
    path("me", views.MeApi.as_view(), name="auth-me"),
    path("csrf", views.CsrfApi.as_view(), name="auth-csrf"),
    path("2fa", views.TwoFactorApi.as_view(), name="auth-2fa"),
    path("2fa/setup", views.TwoFactorSetupApi.as_view(), name="auth-2fa-setup"),
    path("2fa/confirm", views.TwoFactorConfirmApi.as_view(), name="auth-2fa-confirm"),
    path("2fa/disable", views.TwoFactorDisableApi.as_view(), name="auth-2fa-disable"),
]
