from django.urls import path

from orders.api import views

urlpatterns = [
    path("orders", views.OrderCollectionApi.as_view(), name="orders"),
    path("orders/<int:order_id>", views.OrderDetailApi.as_view(), name="order-detail"),
    path("trades/my", views.MyTradesApi.as_view(), name="my-trades"),
    path("trades", views.PublicTradesApi.as_view(), name="trades"),
    path("orderbook/<str:symbol>", views.OrderbookApi.as_view(), name="orderbook"),
    path("ticker/<str:symbol>", views.TickerApi.as_view(), name="ticker"),
    path("klines/<str:symbol>", views.KlinesApi.as_view(), name="klines"),
]
