"""A user's API keys: list, create (the secret is shown once), revoke.

Session only: a request signed with an API key is refused with 403
API_KEY_NOT_ALLOWED, so a leaked key cannot mint or revoke keys. Creating a
key that may withdraw needs step-up (``exchange.accounts.stepup``).
"""

from drf_spectacular.utils import OpenApiExample, extend_schema, extend_schema_serializer
from rest_framework import serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.response import Response
from rest_framework.views import APIView

from exchange.accounts.stepup import step_up_verify
from exchange.apikeys.models import PERMISSIONS, WITHDRAW, ApiKey
from exchange.apikeys.permissions import SESSION_ONLY, ApiKeyPermission
from exchange.apikeys.selectors import api_key_list_for_user
from exchange.apikeys.services import api_key_allowlist_check, api_key_create, api_key_revoke
from exchange.audit.services import audit_context
from exchange.core.schema import NOT_AUTHENTICATED, error_response

TAGS = ["API keys"]
SESSION_AUTH = [{"cookieAuth": []}]  # documented as session only: keys are refused here

API_KEY_NOT_ALLOWED = error_response(
    "Signed with an API key (keys cannot manage keys), or the CSRF token is missing.",
    ("API_KEY_NOT_ALLOWED", "This endpoint cannot be used with an API key; sign in with a session.", None),
    ("CSRF_FAILED", "CSRF Failed: CSRF token missing.", None),
)


@extend_schema_serializer(component_name="ApiKey")
class ApiKeyOutput(serializers.Serializer):
    key_id = serializers.CharField(help_text="Send as X-API-KEY.")
    label = serializers.CharField()
    permissions = serializers.ListField(child=serializers.ChoiceField(choices=PERMISSIONS))
    ip_allowlist = serializers.ListField(child=serializers.CharField(), help_text="Empty: any address.")
    status = serializers.ChoiceField(choices=ApiKey.Status.choices)
    created_at = serializers.DateTimeField()
    last_used_at = serializers.DateTimeField(allow_null=True, help_text="Accurate to a minute.")
    expires_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)


KEY_EXAMPLE = {
    "key_id": "kR3b0tq9Yx2Vn8WmZc1LpA4sDf6Gh7Jk5Tu0Ie9OwQ",
    "label": "market maker",
    "permissions": ["read", "trade"],
    "ip_allowlist": ["203.0.113.0/24"],
    "status": "active",
    "created_at": "2026-01-02T03:04:05Z",
    "last_used_at": None,
    "expires_at": None,
    "revoked_at": None,
}


class ApiKeyListCreateApi(APIView):
    permission_classes = [IsAuthenticated, ApiKeyPermission]
    api_key_permission = SESSION_ONLY

    @extend_schema_serializer(component_name="ApiKeyCreate")
    class Input(serializers.Serializer):
        label = serializers.CharField(max_length=64)
        permissions = serializers.ListField(
            child=serializers.ChoiceField(choices=PERMISSIONS),
            default=list,
            help_text="read is always granted; withdraw needs an ip_allowlist.",
        )
        ip_allowlist = serializers.ListField(
            child=serializers.CharField(max_length=64),
            default=list,
            help_text="IP addresses or CIDR networks the key may be used from; empty: any.",
        )
        expires_at = serializers.DateTimeField(required=False, allow_null=True, default=None)
        password = serializers.CharField(max_length=128, required=False, write_only=True, trim_whitespace=False,
                                         help_text="Step-up for a key with withdraw, without two-factor "
                                                   "authentication: your password.")
        otp = serializers.CharField(max_length=8, required=False, write_only=True,
                                    help_text="Step-up for a key with withdraw, with two-factor authentication on: "
                                              "your authenticator code.")

    @extend_schema_serializer(component_name="ApiKeyCreated")
    class CreatedOutput(ApiKeyOutput):
        secret = serializers.CharField(help_text="Shown this once; the exchange cannot show it again.")

    @extend_schema(
        tags=TAGS,
        auth=SESSION_AUTH,
        operation_id="api_keys_list",
        responses={200: ApiKeyOutput(many=True), 401: NOT_AUTHENTICATED, 403: API_KEY_NOT_ALLOWED},
        examples=[OpenApiExample("Keys", value=[KEY_EXAMPLE], response_only=True)],
        description="Your API keys, newest first, including revoked and expired ones. Secrets are never shown.",
    )
    def get(self, request):
        return Response(ApiKeyOutput(api_key_list_for_user(user=request.user), many=True).data)

    @extend_schema(
        tags=TAGS,
        auth=SESSION_AUTH,
        operation_id="api_keys_create",
        request=Input,
        responses={
            201: CreatedOutput,
            400: error_response(
                "Invalid input.",
                (
                    "INVALID_IP_ALLOWLIST",
                    "'10.0.0.1/8' is not an IP address or a network in CIDR notation (e.g. 203.0.113.0/24).",
                    "ip_allowlist.0",
                ),
                (
                    "WITHDRAW_REQUIRES_IP_ALLOWLIST",
                    "A key with the withdraw permission must be limited to an IP allowlist.",
                    "ip_allowlist",
                ),
                ("EXPIRES_AT_IN_PAST", "expires_at must be in the future.", "expires_at"),
                ("API_KEY_LIMIT_REACHED", "A user may hold at most 20 active API keys; revoke one first.", None),
                ("IP_ALLOWLIST_TOO_WIDE", "10.0.0.0/8 is too wide for a key that may withdraw: at most /16 for IPv4.",
                 "ip_allowlist.0"),
                ("INVALID_PASSWORD", "The password is wrong.", "password"),
                ("INVALID_OTP", "The authenticator code is wrong or was already used.", "otp"),
            ),
            401: NOT_AUTHENTICATED,
            403: error_response(
                "Signed with an API key, the CSRF token is missing, or a key with withdraw without step-up.",
                ("API_KEY_NOT_ALLOWED", "This endpoint cannot be used with an API key; sign in with a session.", None),
                ("CSRF_FAILED", "CSRF Failed: CSRF token missing.", None),
                ("STEP_UP_REQUIRED", "Confirm with your password (password).", "password"),
            ),
            429: error_response("Locked out after too many failed step-ups or sign-ins.",
                                ("LOGIN_LOCKED_OUT", "Too many failed sign-ins for this account from your address: "
                                                     "try again in 15 minutes, or ask an operator to lift the "
                                                     "lockout.", None)),
        },
        examples=[
            OpenApiExample(
                "Trading bot",
                value={"label": "market maker", "permissions": ["read", "trade"], "ip_allowlist": ["203.0.113.0/24"]},
                request_only=True,
            ),
            OpenApiExample(
                "Created",
                value={**KEY_EXAMPLE, "secret": "8vYq...the secret, 64 characters...Nw"},
                response_only=True,
                status_codes=["201"],
            ),
        ],
        description="Create a key. The response holds the secret, which is never shown again: store it now. A key "
                    "with `withdraw` needs an `ip_allowlist` of networks no wider than /16 (IPv4) or /48 (IPv6), "
                    "and step-up: `otp` (your authenticator code) when two-factor authentication is on, otherwise "
                    "`password`.",
    )
    def post(self, request):
        data = self.Input(data=request.data)
        data.is_valid(raise_exception=True)
        values = dict(data.validated_data)
        password, otp = values.pop("password", None), values.pop("otp", None)
        if WITHDRAW in values["permissions"]:
            api_key_allowlist_check(permissions=values["permissions"], ip_allowlist=values["ip_allowlist"])
            step_up_verify(request=request._request, user=request.user, password=password, otp=otp)
        api_key, secret = api_key_create(user=request.user, **values, audit=audit_context(request))
        return Response({**ApiKeyOutput(api_key).data, "secret": secret}, status=status.HTTP_201_CREATED)


class ApiKeyRevokeApi(APIView):
    permission_classes = [IsAuthenticated, ApiKeyPermission]
    api_key_permission = SESSION_ONLY

    @extend_schema(
        tags=TAGS,
        auth=SESSION_AUTH,
        operation_id="api_keys_revoke",
        responses={
            204: None,
            401: NOT_AUTHENTICATED,
            403: API_KEY_NOT_ALLOWED,
            404: error_response("You have no key with this id.", ("NOT_FOUND", "Not found.", None)),
        },
        description="Revoke one of your keys at once (idempotent). Requests signed with it are refused from now on.",
    )
    def delete(self, request, key_id: str):
        api_key_revoke(user=request.user, key_id=key_id, audit=audit_context(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

