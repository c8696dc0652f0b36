"""Registration and session login for browsers; two-factor authentication; the current user.

Register and login are CSRF-protected like Django's own login form: a
browser first calls ``GET /auth/csrf`` and sends the token back in
``X-CSRFToken`` (the cookie comes along by itself). Both are throttled per
IP with the ``auth`` rate, and failed sign-ins lock a username out from an
address for a while (``exchange.accounts.lockout``). Once a user turned on
two-factor authentication (``/auth/2fa/...``), signing in needs the code
too; staff always need it (they enroll in the back office).
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
from exchange.accounts.lockout import lockout_message, login_locked_out
from exchange.accounts.services import user_register
from exchange.accounts.twofactor import (
    base32_key,
    otp_session_login,
    totp_device,
    totp_disable,
    totp_enroll_begin,
    totp_enroll_confirm,
    totp_verify,
)
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
        otp = serializers.CharField(max_length=8, required=False, allow_blank=True, write_only=True,
                                    help_text="The authenticator code, once two-factor authentication is on.")

    @extend_schema(
        tags=TAGS,
        operation_id="auth_login",
        request=Input,
        responses={
            200: UserOutput,
            400: error_response(
                "Wrong username or password (which one is not said), or a wrong authenticator code.",
                ("INVALID_CREDENTIALS", "Wrong username or password.", None),
                ("INVALID_OTP", "The authenticator code is wrong or was already used.", "otp"),
            ),
            401: error_response(
                "The password was right; this account also needs its authenticator code.",
                ("OTP_REQUIRED", "This account has two-factor authentication on: send the code as otp.", "otp"),
            ),
            403: error_response(
                "CSRF token missing, or a staff account without an authenticator (enroll in the back office).",
                ("CSRF_FAILED", "CSRF Failed: CSRF token missing.", None),
                ("TOTP_SETUP_REQUIRED", "Staff accounts need two-factor authentication: sign in to the back office "
                                        "once to set it up.", None),
            ),
            429: error_response(
                "Too many requests, or too many failed sign-ins for this username from this address.",
                ("RATE_LIMITED", "Request was throttled. Expected available in 1 second.", None),
                ("LOGIN_LOCKED_OUT", "Too many failed sign-ins for this account from your address: try again in 15 "
                                     "minutes, or ask an operator to lift the lockout.", None),
            ),
        },
        examples=[
            OpenApiExample(
                "Sign in", value={"username": "alice", "password": "a-long-unusual-passphrase"}, request_only=True
            ),
            OpenApiExample(
                "Sign in with two-factor authentication",
                value={"username": "alice", "password": "a-long-unusual-passphrase", "otp": "123456"},
                request_only=True,
            ),
            OpenApiExample("Signed in", value=USER_EXAMPLE, response_only=True, status_codes=["200"]),
        ],
        description=(
            "Start a session (cookie `sessionid`). The CSRF token changes at login: read the new `csrftoken` cookie. "
            "After `LOGIN_FAILURE_LIMIT` failures (wrong password or code) for a username from one address, that "
            "pair is refused for `LOGIN_LOCKOUT_MINUTES`, even with the right password."
        ),
    )
    def post(self, request):
        django_request = request._request
        enforce_csrf(django_request)
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        credentials = data.validated_data
        user = authenticate(django_request, username=credentials["username"], password=credentials["password"])
        if user is None:
            if login_locked_out(django_request):
                raise ApplicationError("LOGIN_LOCKED_OUT", lockout_message(), status_code=429)
            raise ApplicationError("INVALID_CREDENTIALS", "Wrong username or password.")
        device = totp_device(user)
        if device is None and (user.is_staff or user.is_superuser):
            raise ApplicationError("TOTP_SETUP_REQUIRED", "Staff accounts need two-factor authentication: sign in "
                                   "to the back office once to set it up.", status_code=403)
        if device is not None:
            if not credentials.get("otp"):
                raise ApplicationError("OTP_REQUIRED", "This account has two-factor authentication on: send the "
                                       "code from your authenticator app as otp.", field="otp", status_code=401)
            device = totp_verify(user=user, token=credentials["otp"], request=django_request)
        login(django_request, user)
        if device is not None:
            otp_session_login(django_request, device)
        return Response(UserOutput(user).data)


class LogoutApi(APIView):
    permission_classes = [AllowAny, ApiKeyPermission]
    api_key_permission = SESSION_ONLY

    @extend_schema(
        tags=TAGS,
        operation_id="auth_logout",
        auth=[{"cookieAuth": []}, {}],  # the session is optional: without one, nothing to end
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


# -- two-factor authentication ----------------------------------------------------------------

TWO_FACTOR_TAGS = ["Two-factor authentication"]
SESSION_AUTH = [{"cookieAuth": []}]


@extend_schema_serializer(component_name="TwoFactorStatus")
class TwoFactorOutput(serializers.Serializer):
    enabled = serializers.BooleanField(help_text="Whether signing in and step-ups need an authenticator code.")


class OtpInput(serializers.Serializer):
    otp = serializers.CharField(max_length=8, help_text="The 6 digits the authenticator app shows now.")


class TwoFactorApi(APIView):
    permission_classes = [IsAuthenticated, ApiKeyPermission]
    api_key_permission = SESSION_ONLY

    @extend_schema(tags=TWO_FACTOR_TAGS, auth=SESSION_AUTH, operation_id="auth_2fa_status",
                   responses={200: TwoFactorOutput, 401: NOT_AUTHENTICATED},
                   description="Whether your account has two-factor authentication (TOTP) on.")
    def get(self, request):
        return Response(TwoFactorOutput({"enabled": totp_device(request.user) is not None}).data)


class TwoFactorSetupApi(APIView):
    permission_classes = [IsAuthenticated, ApiKeyPermission]
    api_key_permission = SESSION_ONLY

    @extend_schema_serializer(component_name="TwoFactorSetup")
    class Output(serializers.Serializer):
        key = serializers.CharField(help_text="The secret, base32 in groups of four, to type into the app.")
        otpauth_url = serializers.CharField(help_text="The same as an otpauth:// URI (show it as a QR code).")

    @extend_schema(
        tags=TWO_FACTOR_TAGS, auth=SESSION_AUTH, operation_id="auth_2fa_setup", request=None,
        responses={201: Output, 401: NOT_AUTHENTICATED, 403: CSRF_FAILED,
                   409: error_response("Already on.", ("TOTP_ALREADY_ENABLED", "Two-factor authentication is already "
                                                       "on for this account.", None))},
        description="Start turning two-factor authentication on: returns a new secret for your authenticator app "
                    "(replacing any set-up not confirmed yet). Nothing changes until you confirm a code with "
                    "`POST /auth/2fa/confirm`.",
    )
    def post(self, request):
        device = totp_enroll_begin(user=request.user)
        return Response(self.Output({"key": base32_key(device), "otpauth_url": device.config_url}).data,
                        status=status.HTTP_201_CREATED)


class TwoFactorConfirmApi(APIView):
    permission_classes = [IsAuthenticated, ApiKeyPermission]
    api_key_permission = SESSION_ONLY

    @extend_schema(
        tags=TWO_FACTOR_TAGS, auth=SESSION_AUTH, operation_id="auth_2fa_confirm", request=OtpInput,
        responses={200: TwoFactorOutput, 401: NOT_AUTHENTICATED, 403: CSRF_FAILED,
                   400: error_response("Wrong code.", ("INVALID_OTP", "The authenticator code is wrong or was "
                                                       "already used.", "otp")),
                   409: error_response("No set-up started.", ("TOTP_NOT_STARTED", "Start the set-up first: no "
                                                              "authenticator is waiting for a code.", None))},
        description="Turn two-factor authentication on with the first code the app shows. From now on signing in, "
                    "requesting a withdrawal and creating a withdraw-capable API key need a code.",
    )
    def post(self, request):
        data = OtpInput(data=request.data)
        data.is_valid(raise_exception=True)
        device = totp_enroll_confirm(user=request.user, token=data.validated_data["otp"],
                                     audit=audit_context(request))
        otp_session_login(request._request, device)
        return Response(TwoFactorOutput({"enabled": True}).data)


class TwoFactorDisableApi(APIView):
    permission_classes = [IsAuthenticated, ApiKeyPermission]
    api_key_permission = SESSION_ONLY

    @extend_schema(
        tags=TWO_FACTOR_TAGS, auth=SESSION_AUTH, operation_id="auth_2fa_disable", request=OtpInput,
        responses={204: None, 401: NOT_AUTHENTICATED,
                   400: error_response("Wrong code, or not on.",
                                       ("INVALID_OTP", "The authenticator code is wrong or was already used.", "otp"),
                                       ("TOTP_NOT_ENABLED", "Two-factor authentication is not on for this account.",
                                        "otp")),
                   403: error_response("Staff must keep it, or the CSRF token is missing.",
                                       ("TOTP_REQUIRED_FOR_STAFF", "Staff accounts cannot turn two-factor "
                                                                   "authentication off.", None),
                                       ("CSRF_FAILED", "CSRF Failed: CSRF token missing.", None))},
        description="Turn two-factor authentication off, with a current code.",
    )
    def post(self, request):
        if request.user.is_staff:
            raise ApplicationError("TOTP_REQUIRED_FOR_STAFF", "Staff accounts cannot turn two-factor authentication "
                                   "off.", status_code=403)
        data = OtpInput(data=request.data)
        data.is_valid(raise_exception=True)
        totp_verify(user=request.user, token=data.validated_data["otp"], request=request._request)
        totp_disable(user=request.user, audit=audit_context(request))
        return Response(status=status.HTTP_204_NO_CONTENT)
