"""OpenAPI description of API key and session authentication (loaded by ExchangeConfig.ready)."""

from drf_spectacular.authentication import SessionScheme
from drf_spectacular.extensions import OpenApiAuthenticationExtension

from exchange.apikeys import signing

_SCHEME = (
    "Requests signed with an API key: all four headers together. X-SIGNATURE is the hex HMAC-SHA256, keyed "
    "with the secret, of the lines timestamp, recv window, METHOD, path, sorted percent-encoded query and hex "
    "SHA-256 of the body, joined by newlines. See docs/API.md."
)


class ApiKeyAuthenticationScheme(OpenApiAuthenticationExtension):
    target_class = "exchange.apikeys.authentication.ApiKeyAuthentication"
    name = ["ApiKey", "ApiTimestamp", "ApiRecvWindow", "ApiSignature"]
    priority = 1

    def get_security_definition(self, auto_schema):
        def header(name: str, description: str) -> dict:
            return {"type": "apiKey", "in": "header", "name": name, "description": description}

        return [
            header(signing.HEADER_API_KEY, "The key's public id. " + _SCHEME),
            header(signing.HEADER_TIMESTAMP, "Milliseconds since the Unix epoch when the request was signed."),
            header(
                signing.HEADER_RECV_WINDOW,
                f"Optional: milliseconds the request stays valid (default {signing.RECV_WINDOW_MS_DEFAULT}, "
                f"at most {signing.RECV_WINDOW_MS_MAX}).",
            ),
            header(signing.HEADER_SIGNATURE, "Hex HMAC-SHA256 of the canonical request, keyed with the secret."),
        ]


class ExchangeSessionScheme(SessionScheme):
    """The session cookie, as for DRF's SessionAuthentication (which ours subclasses)."""

    target_class = "exchange.accounts.authentication.SessionAuthentication"
