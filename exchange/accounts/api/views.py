"""Registration and session login for browsers; the current user for every client.

Register and login are CSRF-protected like Django's own login form: a
browser first calls ``GET /auth/csrf`` and sends the token back in
``X-CSRFToken`` (the cookie comes along by itself). Both are throttled per
IP with the ``auth`` rate.
"""

from django.contrib.auth import authenticate, login, logout
from django.middleware.csrf import get_token
from django.utils.decorators import method_decorator
from django.views.decorators.csrf import ensure_csrf_cookie
from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny, IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.accounts.authentication import enforce_csrf
from exchange.accounts.services import user_register
from exchange.apikeys.models import ApiKey
from exchange.apikeys.permissions import SESSION_ONLY, ApiKeyPermission
from exchange.audit.services import audit_context
from exchange.core.errors import ApplicationError
from exchange.core.schema import NOT_AUTHENTICATED, RATE_LIMITED, error_response

TAGS = ["Authentication"]

CSRF_FAILED = error_response(
    "The CSRF token is missing or wrong.",
    ("CSRF_FAILED", "CSRF Failed: CSRF token missing.", None),
)


@extend_schema_serializer(component_name="User")
class UserOutput(serializers.Serializer):
    id = serializers.IntegerField()
    username = serializers.CharField()
    email = serializers.EmailField()
    date_joined = serializers.DateTimeField()


USER_EXAMPLE = {"id": 7, "username": "alice", "email": "alice@example.com", "date_joined": "2026-01-02T03:04:05Z"}


class RegisterApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "auth"

    @extend_schema_serializer(component_name="Register")
    class Input(serializers.Serializer):
        username = serializers.RegexField(
            r"^[\w.@+-]+\Z", max_length=150, help_text="Letters, digits and @ . + - _ only."
        )
        email = serializers.EmailField(max_length=254)
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    @extend_schema(
        tags=TAGS,
        operation_id="auth_register",
        request=Input,
        responses={
            201: UserOutput,
            400: error_response(
                "Invalid input; every problem is listed under `errors`.",
                ("USERNAME_TAKEN", "This username is already taken.", "username"),
                ("EMAIL_TAKEN", "An account with this e-mail address already exists.", "email"),
                ("PASSWORD_TOO_SHORT", "This password is too short. It must contain at least 10 characters.", "password"),
                ("PASSWORD_TOO_COMMON", "This password is too common.", "password"),
            ),
            403: CSRF_FAILED,
            429: RATE_LIMITED,
        },
        examples=[
            OpenApiExample(
                "New trader",
                value={"username": "alice", "email": "alice@example.com", "password": "a-long-unusual-passphrase"},
                request_only=True,
            ),
            OpenApiExample("Created", value=USER_EXAMPLE, response_only=True, status_codes=["201"]),
        ],
        description="Create an account (Django's password validators apply) and sign in with a session.",
    )
    def post(self, request):
        enforce_csrf(request._request)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        user = user_register(**data.validated_data, audit=audit_context(request))
        login(request._request, user, backend="django.contrib.auth.backends.ModelBackend")
        return Response(UserOutput(user).data, status=status.HTTP_201_CREATED)


class LoginApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_scope = "auth"

    @extend_schema_serializer(component_name="Login")
    class Input(serializers.Serializer):
        username = serializers.CharField(max_length=150)
        password = serializers.CharField(max_length=128, write_only=True, trim_whitespace=False)

    @extend_schema(
        tags=TAGS,
        operation_id="auth_login",
        request=Input,
        responses={
            200: UserOutput,
            400: error_response(
                "Wrong username or password (which one is not said).",
                ("INVALID_CREDENTIALS", "Wrong username or password.", None),
            ),
            403: CSRF_FAILED,
            429: RATE_LIMITED,
        },
        examples=[
            OpenApiExample(
                "Sign in", value={"username": "alice", "password": "a-long-unusual-passphrase"}, request_only=True
            ),
            OpenApiExample("Signed in", value=USER_EXAMPLE, response_only=True, status_codes=["200"]),
        ],
        description=(
            "Start a session (cookie `sessionid`). The CSRF token changes at login: read the new `csrftoken` cookie."
        ),
    )
    def post(self, request):
        enforce_csrf(request._request)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        user = authenticate(request._request, **data.validated_data)
        if user is None:
            raise ApplicationError("INVALID_CREDENTIALS", "Wrong username or password.")
        login(request._request, user)
        return Response(UserOutput(user).data)


class LogoutApi(APIView):
    permission_classes = [AllowAny, ApiKeyPermission]
    api_key_permission = SESSION_ONLY

    @extend_schema(
        tags=TAGS,
        operation_id="auth_logout",
        auth=[{"cookieAuth": []}],
        request=None,
        responses={204: None, 403: CSRF_FAILED},
        description="End the session. Needs the CSRF token when signed in; does nothing when not signed in.",
    )
    def post(self, request):
        logout(request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_serializer(component_name="AuthMethod")
class AuthOutput(serializers.Serializer):
    method = serializers.ChoiceField(choices=["session", "api_key"])
    key_id = serializers.CharField(required=False, help_text="With method api_key only.")
    permissions = serializers.ListField(child=serializers.CharField(), required=False, help_text="With method api_key only.")


class MeApi(APIView):
    """The signed-in user, and how this request was authenticated (a cheap probe for API key clients)."""

    permission_classes = [IsAuthenticated, ApiKeyPermission]

    @extend_schema_serializer(component_name="Me")
    class Output(UserOutput):
        auth = AuthOutput()

    @extend_schema(
        tags=TAGS,
        operation_id="auth_me",
        responses={200: Output, 401: NOT_AUTHENTICATED},
        examples=[
            OpenApiExample(
                "With an API key",
                value={**USER_EXAMPLE, "auth": {"method": "api_key", "key_id": "kR3...Q", "permissions": ["read", "trade"]}},
                response_only=True,
            ),
            OpenApiExample("With a session", value={**USER_EXAMPLE, "auth": {"method": "session"}}, response_only=True),
        ],
    )
    def get(self, request):
        user = request.user
        api_key = request.auth if isinstance(request.auth, ApiKey) else None
        if api_key is None:
            auth = {"method": "session"}
        else:
            auth = {"method": "api_key", "key_id": api_key.key_id, "permissions": api_key.permissions}
        me = {"id": user.pk, "username": user.username, "email": user.email, "date_joined": user.date_joined, "auth": auth}
        return Response(self.Output(me).data)


@method_decorator(ensure_csrf_cookie, name="dispatch")
class CsrfApi(APIView):
    authentication_classes: list = []
    permission_classes = [AllowAny]

    @extend_schema_serializer(component_name="CsrfToken")
    class Output(serializers.Serializer):
        csrf_token = serializers.CharField(help_text="Send as the X-CSRFToken header on unsafe requests of a session.")

    @extend_schema(
        tags=TAGS,
        operation_id="auth_csrf",
        responses=Output,
        examples=[OpenApiExample("Token", value={"csrf_token": "Xq8...Zt"}, response_only=True)],
        description="Set the `csrftoken` cookie and return the token, for browser clients. API key clients need none.",
    )
    def get(self, request):
        return Response(self.Output({"csrf_token": get_token(request._request)}).data)
