"""The signing examples of docs/API.md work as written, against a real HTTP server."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.factories import api_key_for

ROOT = Path(__file__).resolve().parents[2]


def documented_example(name: str) -> str:
    """The fenced code block that follows ``<!-- example: name -->`` in docs/API.md."""
    text = (ROOT / "docs" / "API.md").read_text()
    match = re.search(rf"<!-- example: {name} -->\n```\w+\n(.*?)```", text, re.S)
    assert match, f"docs/API.md has no example {name!r}"
    return match.group(1)


def fill_in(code: str, base_url: str, key_id: str, secret: str) -> str:
    code = code.replace("http://127.0.0.1:8000", base_url)
    assert "<key_id>" in code and "<secret>" in code
    return code.replace("<key_id>", key_id).replace("<secret>", secret)


@pytest.fixture
def key_and_server(live_server, redis_app):
    api_key, secret = api_key_for(permissions=("read", "trade"))
    return api_key, secret, live_server.url


def test_python_example(key_and_server):
    """The Python example, with a real key filled in, authenticates against a live server."""
    api_key, secret, base_url = key_and_server
    code = fill_in(documented_example("python"), base_url, api_key.key_id, secret)

    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert result.returncode == 0, result.stderr
    me = ast.literal_eval(result.stdout.strip())  # the example prints a dict
    assert me["auth"] == {"method": "api_key", "key_id": api_key.key_id, "permissions": ["read", "trade"]}


@pytest.mark.skipif(not (shutil.which("curl") and shutil.which("openssl")), reason="needs curl and openssl")
def test_curl_example(key_and_server):
    """The shell example (printf, openssl, curl), with a real key filled in, authenticates against a live server."""
    api_key, secret, base_url = key_and_server
    script = fill_in(documented_example("curl"), base_url, api_key.key_id, secret)

    result = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, env=dict(os.environ))

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["auth"]["key_id"] == api_key.key_id
