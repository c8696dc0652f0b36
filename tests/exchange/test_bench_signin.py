"""bench_signin runs end to end and shows that requests that do not sign in pay nothing for the lockout."""

import re

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_the_lockout_adds_no_query_to_requests_that_do_not_sign_in(capsys, redis_app):
    """Same number of queries with the lockout on and off for every request but a failed sign-in; the staff
    session's second-factor check is one query; nothing is left in the database."""
    from django.contrib.auth import get_user_model

    call_command("bench_signin", "--requests", "5", "--logins", "3")

    lines = re.findall(r"^(lockout o(?:n|ff)) +(.+?) +queries=([\d.]+) cpu_us=\d+$", capsys.readouterr().out, re.M)
    queries = {(mode, name): float(count) for mode, name, count in lines}
    assert len(queries) == 10
    for name in ("anonymous GET /api/v1/markets", "trader session GET /api/v1/balances",
                 "trader session GET /api/v1/auth/me", "staff session GET /api/v1/auth/me"):
        assert queries[("lockout on", name)] == queries[("lockout off", name)], name
    assert queries[("lockout on", "staff session GET /api/v1/auth/me")] == \
        queries[("lockout on", "trader session GET /api/v1/auth/me")] + 1
    assert queries[("lockout on", "failed POST /api/v1/auth/login")] > \
        queries[("lockout off", "failed POST /api/v1/auth/login")]
    assert not get_user_model().objects.filter(username__startswith="bench-signin").exists()
