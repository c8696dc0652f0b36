"""Set-up for the benchmarks that measure what happens after acceptance
(``bench_matcher``, ``bench_ws``): a fresh market, funded traders, and engine
benchmark commands accepted as the order API would.

``accept(...)`` turns a slice of ``matching.bench.generate`` commands into
what a placement or cancel leaves behind, in one transaction: order rows
``PENDING`` with their funds held, cancels flagged (orders locked first, in
ascending id order, as the platform does), and returns the stream entries to
XADD after the commit. It is much faster than the API, so a benchmark can
offer a matcher more than one web process could.
"""

from __future__ import annotations

import uuid
from decimal import Decimal as D

from django.contrib.auth import get_user_model
from django.db import connection, transaction
from django.utils import timezone

from exchange.models import Asset, Market
from matching import stream
from matching.engine import MARKET, CancelOrder, NewOrder
from orders.models import Order, hold_reference
from wallet.services import HoldPlace, deposit_credit, ledger_apply

MID_TICKS = 100_000
TICK = D("0.01")
STEP = D("0.0001")


def bench_market(prefix: str) -> Market:
    """A fresh market ``<prefix>XXXXXX-BUSD`` (so each run starts from an empty book)."""
    quote, _ = Asset.objects.get_or_create(code="BUSD", defaults={"name": "Bench dollar", "precision": 8})
    symbol = f"{prefix}{uuid.uuid4().hex[:6].upper()}-BUSD"
    base, _ = Asset.objects.get_or_create(code=symbol.split("-")[0], defaults={"name": "Bench coin", "precision": 8})
    return Market.objects.create(
        symbol=symbol, base=base, quote=quote, tick_size=TICK, step_size=STEP, min_quantity=STEP,
        max_quantity=D(1000), min_notional=D(0), maker_fee_rate=D("0.001"), taker_fee_rate=D("0.002"),
        price_band=D("0.5"))


def funded_traders(market, count: int, *, name: str, base=D(10**9), quote=D(10**12)) -> list:
    """``count`` new users ``<name>-<i>``, each credited ``base`` and ``quote`` of ``market``."""
    User = get_user_model()
    traders = []
    for index in range(count):
        user = User.objects.create(username=f"{name}-{index}")
        for asset, amount in ((market.base, base), (market.quote, quote)):
            deposit_credit(user=user, asset=asset, amount=amount, txid=f"bench-{uuid.uuid4().hex}", source="CUSTODY")
        traders.append(user)
    return traders


def _order_row(command: NewOrder, *, market, traders, rates) -> Order:
    quantity = STEP * command.quantity_lots
    common = dict(user=traders[command.user_id - 1], market=market, client_order_id=uuid.uuid4().hex,
                  side=command.side, quantity=quantity, stp_mode="EXPIRE_TAKER",
                  maker_fee_rate=rates.maker, taker_fee_rate=rates.taker)
    if command.order_type == MARKET:
        cap = TICK * MID_TICKS * 2 * quantity  # a market buy holds twice the mid's notional
        return Order(type="MARKET", hold_amount=cap if command.side == "BUY" else quantity, **common)
    price = TICK * command.price_ticks
    return Order(type="LIMIT", time_in_force="GTC", price=price,
                 hold_amount=price * quantity if command.side == "BUY" else quantity, **common)


def accept(commands, *, market, traders, rates, db_id: dict[int, int], durable: bool = True):
    """Accept ``commands`` (NewOrder / CancelOrder of ``matching.bench``); returns
    ``(new order rows, stream entries)``. ``db_id`` maps engine order ids to
    database ids across calls. ``durable=False`` skips this transaction's WAL
    flush (an injector standing in for many API processes)."""
    new_orders = [_order_row(c, market=market, traders=traders, rates=rates)
                  for c in commands if isinstance(c, NewOrder)]
    with transaction.atomic():
        if not durable:
            with connection.cursor() as cursor:
                cursor.execute("SET LOCAL synchronous_commit TO OFF")
        earlier = sorted(db_id[c.order_id] for c in commands if isinstance(c, CancelOrder) and c.order_id in db_id)
        if earlier:
            list(Order.objects.select_for_update().filter(id__in=earlier).order_by("id").values_list("id"))
        if new_orders:
            Order.objects.bulk_create(new_orders)
            ledger_apply([
                HoldPlace(reference=hold_reference(order.pk), user_id=order.user_id,
                          asset_id=market.quote_id if order.side == "BUY" else market.base_id,
                          amount=order.hold_amount)
                for order in new_orders
            ])
        created = iter(new_orders)
        entries, cancels = [], []
        for command in commands:
            if isinstance(command, NewOrder):
                db_id[command.order_id] = next(created).pk
                entries.append(stream.command_fields(stream.NEW, db_id[command.order_id]))
            else:
                cancels.append(db_id[command.order_id])
                entries.append(stream.command_fields(stream.CANCEL, db_id[command.order_id]))
        if cancels:
            Order.objects.filter(id__in=cancels).update(cancel_requested_at=timezone.now())
    return new_orders, entries
