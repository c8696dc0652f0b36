"""URLconf for API key tests: the real URLs plus tiny views that declare key permissions."""

from django.urls import include, path
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.apikeys.permissions import TRADE, WITHDRAW


class EchoApi(APIView):
    """GET needs read (the default for safe methods); POST declares read too."""

    api_key_permission = {"POST": "read"}

    def get(self, request):
        return Response({"user": request.user.username, "query": dict(request.query_params.lists())})

    def post(self, request):
        return Response({"user": request.user.username, "data": request.data})


class TradeApi(APIView):
    api_key_permission = TRADE
    throttle_scope = "orders"

    def post(self, request):
        return Response({"traded": True}, status=201)


class WithdrawApi(APIView):
    api_key_permission = WITHDRAW

    def post(self, request):
        return Response({"withdrawn": True}, status=201)


class UndeclaredWriteApi(APIView):
    """Declares nothing: keys may read it but not write to it."""

    def get(self, request):
        return Response({"read": True})

    def post(self, request):
        return Response({"written": True}, status=201)


urlpatterns = [
    path("test/echo", EchoApi.as_view()),
    path("test/trade", TradeApi.as_view()),
    path("test/withdraw", WithdrawApi.as_view()),
    path("test/undeclared", UndeclaredWriteApi.as_view()),
    path("", include("exchange.urls")),
]

handler404 = "exchange.core.errors.json_not_found"
handler500 = "exchange.core.errors.json_server_error"
