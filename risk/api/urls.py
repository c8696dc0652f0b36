from django.urls import path

from risk.api import views

urlpatterns = [
    path("risk/limits", views.RiskLimitsApi.as_view(), name="risk-limits"),
]
