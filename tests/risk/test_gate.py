"""The matcher's admission gate on its own: who is refused and why, what it costs, and that a
kill switch set by another process reaches it within the cache's check interval."""

from __future__ import annotations

import time
import uuid

import pytest

from exchange.core import localcache
from risk.gate import admission_refusals
from risk.metrics import REJECTS_KEY
from risk.models import TradingRestriction
from risk.services import restriction_set

pytestmark = pytest.mark.django_db(transaction=True)


def test_refusals_per_kill_switch(live_market, traders, redis_app):
    """Frozen and cancel-only users are refused with their codes, others pass; a halted market
    refuses everyone; a halted exchange refuses everyone with its own code."""
    alice, bob, carol = traders
    users = {alice.pk, bob.pk, carol.pk}
    assert admission_refusals(users, market_id=live_market.pk) == {}
    restriction_set(kind="USER_FROZEN", user=alice, reason="x")
    restriction_set(kind="USER_CANCEL_ONLY", user=bob, reason="y")
    assert admission_refusals(users, market_id=live_market.pk) == {
        alice.pk: "RISK_USER_FROZEN", bob.pk: "RISK_USER_CANCEL_ONLY"}
    restriction_set(kind="MARKET_HALTED", market=live_market, reason="z")
    assert admission_refusals(users, market_id=live_market.pk) == {
        alice.pk: "RISK_USER_FROZEN", bob.pk: "RISK_USER_CANCEL_ONLY", carol.pk: "MARKET_HALTED"}
    assert admission_refusals({carol.pk}, market_id=live_market.pk + 1) == {}
    restriction_set(kind="EXCHANGE_HALTED", reason="w")
    assert set(admission_refusals(users, market_id=live_market.pk).values()) == {"RISK_EXCHANGE_HALTED"}
    counted = {code.decode(): int(n) for code, n in redis_app.hgetall(REJECTS_KEY).items()}
    assert counted["RISK_USER_FROZEN"] == 2 and counted["RISK_EXCHANGE_HALTED"] == 3


def test_a_batch_nobody_is_refused_in_costs_no_query(live_market, traders, redis_app, django_assert_num_queries):
    """Once the restrictions are cached, consulting the gate reads no database."""
    admission_refusals({traders[0].pk}, market_id=live_market.pk)
    with django_assert_num_queries(0):
        for _ in range(100):
            assert admission_refusals({user.pk for user in traders}, market_id=live_market.pk) == {}


def test_a_switch_set_elsewhere_is_seen_within_the_check_interval(live_market, traders, redis_app):
    """A restriction written without this process knowing (no signal: bulk_create), announced
    only by the shared token moving in Redis, is applied after at most CHECK_EVERY_S."""
    alice = traders[0]
    assert admission_refusals({alice.pk}) == {}
    TradingRestriction.objects.bulk_create([TradingRestriction(kind="USER_FROZEN", user=alice, reason="elsewhere",
                                                               source="command")])
    redis_app.set(localcache.VERSION_KEY, uuid.uuid4().hex)
    time.sleep(localcache.CHECK_EVERY_S + 0.05)
    assert admission_refusals({alice.pk}) == {alice.pk: "RISK_USER_FROZEN"}


def test_redis_down_keeps_the_cached_restrictions(live_market, traders, redis_app, redis_down):
    """The matcher keeps matching with what it cached when the token cannot be read."""
    alice = traders[0]
    TradingRestriction.objects.create(kind="USER_FROZEN", user=alice, reason="x", source="command")
    localcache.reset()
    assert admission_refusals({alice.pk}) == {alice.pk: "RISK_USER_FROZEN"}
