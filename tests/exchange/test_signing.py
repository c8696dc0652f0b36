"""The canonical request and signature of API key requests (pure functions, no server)."""

import hashlib
import hmac
import shutil
import subprocess

import pytest

from exchange.apikeys.signing import (
    body_sha256,
    canonical_query,
    canonical_request,
    sign,
    signatures_equal,
    signed_headers,
)

# The test vector of docs/API.md: clients in other languages check themselves against it.
VECTOR = dict(
    timestamp_ms=1700000000000,
    recv_window_ms=5000,
    method="POST",
    path="/api/v1/orders",
    query={"symbol": "BTC-USDT", "b": "x y"},
    body=b'{"side":"BUY"}',
)
VECTOR_CANONICAL = (
    "1700000000000\n5000\nPOST\n/api/v1/orders\nb=x%20y&symbol=BTC-USDT\n"
    "25f0bce03e078b6fecb5a7045d98dca61a570f4e98d564207b7366db997b9bc0"
)
VECTOR_SIGNATURE = "223573b33af119c580848b6f37cddab950bf570e0f0a8b5062300318077b754b"


def test_canonical_query_sorts_pairs_and_percent_encodes_per_rfc3986():
    """Keys then values sorted, repeated keys kept, only unreserved characters left as they are."""
    query = {"b": "2", "a": ["3", "1"], "sp ace": "x y/z~é", "empty": ""}
    assert canonical_query(query) == "a=1&a=3&b=2&empty=&sp%20ace=x%20y%2Fz~%C3%A9"


def test_canonical_query_is_the_same_from_a_raw_query_string_or_a_mapping():
    """The server sees the raw query string; the client usually has a dict: both agree."""
    as_sent = "sp+ace=x%20y%2Fz~%C3%A9&b=2&a=3&a=1&empty="
    assert canonical_query(as_sent) == canonical_query("?" + as_sent)
    assert canonical_query(as_sent) == canonical_query({"b": "2", "a": ["3", "1"], "sp ace": "x y/z~é", "empty": ""})
    assert canonical_query([("b", 2), ("a", 3), ("a", 1)]) == "a=1&a=3&b=2"
    assert canonical_query(None) == canonical_query("") == canonical_query({}) == ""
    assert canonical_query({"a": None, "b": 1}) == "b=1"


def test_empty_body_hashes_the_empty_string():
    """A request without body signs the SHA-256 of b'' (the documented constant)."""
    assert body_sha256(b"") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def test_test_vector_of_the_documentation():
    """Six lines joined by newlines; HMAC-SHA256 keyed with the secret's UTF-8 bytes, lower-case hex."""
    canonical = canonical_request(**VECTOR)
    assert canonical == VECTOR_CANONICAL
    assert sign("test-secret", canonical) == VECTOR_SIGNATURE
    expected = hmac.new(b"test-secret", VECTOR_CANONICAL.encode(), hashlib.sha256).hexdigest()
    assert VECTOR_SIGNATURE == expected


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is not installed")
def test_openssl_recipe_of_the_documentation_computes_the_same_signature():
    """The shell recipe of docs/API.md (printf + openssl dgst) agrees with the Python signer."""
    script = r"""
    BODY_SHA256=$(printf '%s' "$BODY" | openssl dgst -sha256 -hex | sed 's/^.* //')
    CANONICAL=$(printf '%s\n%s\n%s\n%s\n%s\n%s' "$TIMESTAMP" "$RECV_WINDOW" "$METHOD" "$REQ_PATH" "$QUERY" "$BODY_SHA256")
    printf '%s' "$CANONICAL" | openssl dgst -sha256 -hmac "$API_SECRET" -hex | sed 's/^.* //'
    """
    env = {
        "PATH": "/usr/bin:/bin", "BODY": '{"side":"BUY"}', "TIMESTAMP": "1700000000000", "RECV_WINDOW": "5000",
        "METHOD": "POST", "REQ_PATH": "/api/v1/orders", "QUERY": "b=x%20y&symbol=BTC-USDT", "API_SECRET": "test-secret",
    }
    result = subprocess.run(["bash", "-c", script], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == VECTOR_SIGNATURE


def test_signed_headers_carry_key_timestamp_window_and_signature():
    """signed_headers gives exactly the four headers, upper-cases the method and refuses a query inside the path."""
    headers = signed_headers("key-1", "test-secret", "post", "/api/v1/orders", VECTOR["query"], '{"side":"BUY"}',
                             timestamp_ms=1700000000000)
    assert headers == {
        "X-API-KEY": "key-1",
        "X-TIMESTAMP": "1700000000000",
        "X-RECV-WINDOW": "5000",
        "X-SIGNATURE": VECTOR_SIGNATURE,
    }
    with pytest.raises(ValueError):
        signed_headers("key-1", "s", "GET", "/api/v1/markets?status=TRADING")


def test_signature_comparison_ignores_hex_case_only():
    """Upper-case hex is the same signature; any other difference is not."""
    assert signatures_equal(VECTOR_SIGNATURE, VECTOR_SIGNATURE.upper())
    assert not signatures_equal(VECTOR_SIGNATURE, VECTOR_SIGNATURE[:-1] + "0")


def test_the_same_request_signed_again_at_once_is_a_new_signature():
    """A client signing the same request twice within one millisecond (a fast server answers
    in less) gets two timestamps, so the server does not refuse the second as a replay; per
    key, and never earlier than now."""
    import time

    before_ms = time.time_ns() // 1_000_000
    headers = [signed_headers("key-a", "secret", "POST", "/api/v1/orders", None, b"{}") for _ in range(50)]
    other = signed_headers("key-b", "secret", "POST", "/api/v1/orders", None, b"{}")
    timestamps = [int(h["X-TIMESTAMP"]) for h in headers]
    assert timestamps == sorted(set(timestamps)) and len({h["X-SIGNATURE"] for h in headers}) == 50
    assert timestamps[0] >= before_ms and int(other["X-TIMESTAMP"]) >= before_ms
