from django.urls import path

from exchange.api import views

urlpatterns = [
    path("assets", views.AssetListApi.as_view(), name="assets"),
    path("markets", views.MarketListApi.as_view(), name="markets"),
    path("markets/<str:symbol>", views.MarketDetailApi.as_view(), name="market-detail"),
]
