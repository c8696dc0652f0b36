from django.urls import path

from wallet.api import views

urlpatterns = [
    path("balances", views.BalanceListApi.as_view(), name="balances"),
    path("ledger", views.LedgerEntryListApi.as_view(), name="ledger"),
    path("withdrawals", views.WithdrawalListCreateApi.as_view(), name="withdrawals"),
    path("deposits", views.DepositListApi.as_view(), name="deposits"),
    path("custody/deposits", views.CustodyDepositApi.as_view(), name="custody-deposits"),
]
