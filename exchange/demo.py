"""An idempotent demo: assets, markets, users and the traders' funds for a first run.

Running it again changes nothing that exists; it only adds what is missing.
Passwords are set when a demo user is created (from EXCHANGE_DEMO_PASSWORD)
and never reset afterwards. The traders' funds are deposits credited by the
operator with fixed txids ("demo-alice-USDT"), which the ledger credits once.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.db import transaction

from exchange.audit import actions
from exchange.audit.services import audit_log_record, snapshot
from exchange.models import Asset, Market
from exchange.roles import COMPLIANCE, OPERATORS, SUPPORT, roles_sync
from risk.models import SurveillanceExemption
from wallet.services import deposit_credit

DEMO_ASSETS = [
    ("BTC", "Bitcoin", 8),
    ("ETH", "Ether", 8),
    ("USDT", "Tether USD", 8),
]

DEMO_MARKETS = [
    dict(
        symbol="BTC-USDT",
        base="BTC",
        quote="USDT",
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.00001"),
        min_quantity=Decimal("0.00001"),
        max_quantity=Decimal("1000"),
        min_notional=Decimal("5"),
    ),
    dict(
        symbol="ETH-USDT",
        base="ETH",
        quote="USDT",
        tick_size=Decimal("0.01"),
        step_size=Decimal("0.0001"),
        min_quantity=Decimal("0.0001"),
        max_quantity=Decimal("10000"),
        min_notional=Decimal("5"),
    ),
]


# Credited to every demo trader once, through the ledger like any deposit.
DEMO_FUNDS = [("USDT", Decimal("100000")), ("BTC", Decimal("2")), ("ETH", Decimal("50"))]
# The demo market maker (manage.py run_market_maker) quotes both sides of every market.
MARKET_MAKER_USERNAME = "maker"
MARKET_MAKER_FUNDS = [("USDT", Decimal("2000000")), ("BTC", Decimal("40")), ("ETH", Decimal("800"))]


@dataclass(frozen=True)
class DemoUser:
    username: str
    role: str
    superuser: bool = False
    staff: bool = False
    group: str | None = None
    funds: tuple = ()


DEMO_USERS = [
    DemoUser("operator", "operator (superuser)", superuser=True, staff=True),
    DemoUser("operator2", "second operator (Operators role): approves what the first asks above the four-eyes "
                          "threshold", staff=True, group=OPERATORS),
    DemoUser("support", "support (reads users, orders, trades; cancels orders)", staff=True, group=SUPPORT),
    DemoUser("compliance", "compliance (read-only back office, exports)", staff=True, group=COMPLIANCE),
    DemoUser("alice", "trader", funds=tuple(DEMO_FUNDS)),
    DemoUser("bob", "trader", funds=tuple(DEMO_FUNDS)),
    DemoUser(MARKET_MAKER_USERNAME, "demo market maker (a bot; trades through the API)", funds=tuple(MARKET_MAKER_FUNDS)),
]


@transaction.atomic
def demo_load(*, password: str, audit: dict | None = None) -> None:
    """Load what is missing; what it creates is audited (``audit``: who loads it, default the process)."""
    audit = audit or {}

    def created(action: str, obj, **extra) -> None:
        audit_log_record(action=action, object_type=obj._meta.label_lower, object_id=obj.pk, after=snapshot(obj),
                         **extra, **audit)

    roles = roles_sync(audit=audit)
    assets = {}
    for code, name, precision in DEMO_ASSETS:
        assets[code], new = Asset.objects.get_or_create(code=code, defaults={"name": name, "precision": precision})
        if new:
            created(actions.ASSET_CREATE, assets[code])
    for spec in DEMO_MARKETS:
        fields = dict(spec, base=assets[spec["base"]], quote=assets[spec["quote"]])
        symbol = fields.pop("symbol")
        if not Market.objects.filter(symbol=symbol).exists():
            market = Market(symbol=symbol, **fields)
            market.full_clean()
            market.save()
            created(actions.MARKET_CREATE, market, market=symbol)
    User = get_user_model()
    users = {}
    for spec in DEMO_USERS:
        user = User.objects.filter(username=spec.username).first()
        if user is None:
            user = User(username=spec.username, email=f"{spec.username}@demo.exchange.local")
            user.is_superuser = spec.superuser
            user.is_staff = spec.staff
            user.set_password(password)
            user.save()
            created(actions.USER_CREATE, user, subject_user=user)
        if spec.group:
            user.groups.add(roles[spec.group])
        users[spec.username] = user
    for spec in DEMO_USERS:
        for code, amount in spec.funds:
            deposit_credit(
                user=users[spec.username],
                asset=assets[code],
                amount=amount,
                txid=f"demo-{spec.username}-{code}",
                actor=users["operator"],
                memo="demo funds",
            )
    # The market maker crosses its own quotes on purpose (stp_mode NONE) so that trades
    # print: an explicit exemption keeps those wash trades out of the alert queue.
    SurveillanceExemption.objects.get_or_create(
        user=users[MARKET_MAKER_USERNAME], kind="",
        defaults={"reason": "Demo market maker: trades with itself on purpose.", "created_by": users["operator"]})
