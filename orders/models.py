"""Orders and trades.

An order is written by two parties only: the placement/cancel/amend services
(inserting it as PENDING with its funds held, flagging a cancel request,
recording an amendment request) and its market's matcher, the single writer
of everything the engine decides (status, fills, fees, trades). The matcher
never overwrites the request fields and the services never overwrite what
the matcher owns, so neither needs to lock against the other beyond a row
update.

Amounts are Decimals in the market's units: ``price`` is a multiple of the
market's tick size, ``quantity`` of its step size, and ``filled_notional``
(price x quantity summed over fills) is exact in the quote asset.
"""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q

from exchange.models import Market, amount_field


class Side(models.TextChoices):
    BUY = "BUY"
    SELL = "SELL"


class OrderType(models.TextChoices):
    LIMIT = "LIMIT"
    MARKET = "MARKET"
    LIMIT_MAKER = "LIMIT_MAKER"
    STOP_LOSS = "STOP_LOSS"
    STOP_LOSS_LIMIT = "STOP_LOSS_LIMIT"
    TAKE_PROFIT = "TAKE_PROFIT"
    TAKE_PROFIT_LIMIT = "TAKE_PROFIT_LIMIT"


PRICED_TYPES = {OrderType.LIMIT, OrderType.LIMIT_MAKER, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT_LIMIT}
STOP_TYPES = {OrderType.STOP_LOSS, OrderType.STOP_LOSS_LIMIT, OrderType.TAKE_PROFIT, OrderType.TAKE_PROFIT_LIMIT}
MARKET_LIKE_TYPES = {OrderType.MARKET, OrderType.STOP_LOSS, OrderType.TAKE_PROFIT}


class TimeInForce(models.TextChoices):
    GTC = "GTC", "Good till canceled"
    IOC = "IOC", "Immediate or cancel"
    FOK = "FOK", "Fill or kill"


class StpMode(models.TextChoices):
    NONE = "NONE"
    EXPIRE_TAKER = "EXPIRE_TAKER"
    EXPIRE_MAKER = "EXPIRE_MAKER"
    EXPIRE_BOTH = "EXPIRE_BOTH"


class OrderStatus(models.TextChoices):
    PENDING = "PENDING", "Pending (accepted, funds held, not yet sequenced)"
    UNTRIGGERED = "UNTRIGGERED"
    NEW = "NEW"
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELED = "CANCELED"
    REJECTED = "REJECTED"
    EXPIRED = "EXPIRED"


OPEN_STATUSES = (OrderStatus.PENDING, OrderStatus.UNTRIGGERED, OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
RESTING_STATUSES = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)
FINAL_STATUSES = (OrderStatus.FILLED, OrderStatus.CANCELED, OrderStatus.REJECTED, OrderStatus.EXPIRED)


class Order(models.Model):
    # No index of its own: order_user_recent (user, -id) and the (user, client_order_id) unique
    # constraint start with it (one index fewer to update per order change, issue 13).
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="orders",
                             db_index=False)
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="orders")
    client_order_id = models.CharField(max_length=64)
    side = models.CharField(max_length=4, choices=Side.choices)
    type = models.CharField(max_length=20, choices=OrderType.choices)
    time_in_force = models.CharField(max_length=3, choices=TimeInForce.choices, null=True, blank=True)
    price = amount_field(null=True, blank=True, help_text="Limit price (priced types).")
    stop_price = amount_field(null=True, blank=True, help_text="Trigger price (stop types).")
    quantity = amount_field(null=True, blank=True, help_text="Base quantity; null for a market order by quote.")
    quote_quantity = amount_field(null=True, blank=True, help_text="Quote amount of a market order by quote.")
    stp_mode = models.CharField(max_length=12, choices=StpMode.choices)
    # What placement held (in the quote asset for a buy, the base for a sell),
    # under the ledger hold "order:<id>". For market-like buys by quantity it
    # is also the funds cap the engine may not exceed.
    hold_amount = amount_field()
    maker_fee_rate = models.DecimalField(max_digits=8, decimal_places=6)
    taker_fee_rate = models.DecimalField(max_digits=8, decimal_places=6)

    status = models.CharField(max_length=16, choices=OrderStatus.choices, default=OrderStatus.PENDING)
    status_reason = models.CharField(
        max_length=40, blank=True, default="", help_text="Why the order was rejected, expired or canceled."
    )
    filled_quantity = amount_field(default=Decimal(0))
    filled_notional = amount_field(default=Decimal(0), help_text="Sum of price x quantity over fills, in quote.")
    fee_total = amount_field(default=Decimal(0), help_text="Fees paid, in the asset this order receives.")
    # Sequence of the engine event that accepted the order; of the event that
    # put it at the back of its price level's queue (ACCEPTED, TRIGGERED or an
    # AMENDED that lost priority): rebuilding a book orders a level by it.
    accepted_sequence = models.BigIntegerField(null=True, blank=True)
    priority_sequence = models.BigIntegerField(null=True, blank=True)
    last_sequence = models.BigIntegerField(null=True, blank=True, help_text="Sequence of the last event applied.")
    cancel_requested_at = models.DateTimeField(null=True, blank=True)
    # Who placed it, for surveillance and audit: the client's address and the
    # API key that signed the request (null for a browser session).
    client_ip = models.GenericIPAddressField(null=True, blank=True)
    api_key = models.ForeignKey("exchange.ApiKey", null=True, blank=True, on_delete=models.PROTECT,
                                related_name="orders", db_index=False)
    triggered_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=False)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "client_order_id"], name="order_client_id_unique_per_user"),
            models.CheckConstraint(condition=Q(quantity__isnull=True) | Q(quantity__gt=0), name="order_quantity_positive"),
            models.CheckConstraint(
                condition=Q(quote_quantity__isnull=True) | Q(quote_quantity__gt=0), name="order_quote_quantity_positive"
            ),
            models.CheckConstraint(condition=Q(price__isnull=True) | Q(price__gt=0), name="order_price_positive"),
            models.CheckConstraint(condition=Q(filled_quantity__gte=0), name="order_filled_not_negative"),
            models.CheckConstraint(
                condition=Q(quantity__isnull=True) | Q(filled_quantity__lte=models.F("quantity")),
                name="order_filled_within_quantity",
            ),
        ]
        indexes = [
            # A user's orders, newest first, optionally per market (lists, cursor pagination).
            models.Index(fields=["user", "-id"], name="order_user_recent"),
            models.Index(fields=["user", "market", "-id"], name="order_user_market_recent"),
            # Open orders of a market: book rebuild (by price, then queue position) and sweeps.
            models.Index(
                fields=["market", "side", "price", "priority_sequence"],
                name="order_market_resting",
                condition=Q(status__in=["NEW", "PARTIALLY_FILLED"]),
            ),
            models.Index(
                fields=["market", "id"],
                name="order_market_unsequenced",
                condition=Q(status__in=["PENDING", "UNTRIGGERED"]),
            ),
            models.Index(
                fields=["market", "id"],
                name="order_market_cancel_requested",
                condition=Q(cancel_requested_at__isnull=False, status__in=list(OPEN_STATUSES)),
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.pk} {self.side} {self.type} {self.market_id}"

    @property
    def is_open(self) -> bool:
        return self.status in OPEN_STATUSES

    @property
    def average_price(self) -> Decimal | None:
        if not self.filled_quantity:
            return None
        return self.filled_notional / self.filled_quantity

    @property
    def hold_reference(self) -> str:
        return hold_reference(self.pk)


def hold_reference(order_id: int) -> str:
    """The ledger hold of an order's funds."""
    return f"order:{order_id}"


class OrderAmendment(models.Model):
    """A request to change an order's price or quantity, applied by the matcher."""

    class Status(models.TextChoices):
        REQUESTED = "REQUESTED"
        APPLIED = "APPLIED"
        REJECTED = "REJECTED"

    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="amendments")
    new_price = amount_field(null=True, blank=True)
    new_quantity = amount_field(null=True, blank=True, help_text="New total quantity, including what already filled.")
    extra_hold = amount_field(default=Decimal(0), help_text="Funds added to the order's hold for this request.")
    previous_price = amount_field(null=True, blank=True, help_text="The order's price before this amendment applied.")
    previous_quantity = amount_field(null=True, blank=True, help_text="The order's quantity before it applied.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.REQUESTED)
    reject_reason = models.CharField(max_length=40, blank=True, default="")
    sequence = models.BigIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    applied_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [
            models.Index(fields=["order", "id"], name="amendment_order"),
            models.Index(fields=["id"], name="amendment_requested", condition=Q(status="REQUESTED")),
        ]

    def __str__(self) -> str:
        return f"amendment {self.pk} of order {self.order_id}"


class Trade(models.Model):
    # The matcher inserts ~500 trades per batch: no single-column index where a composite one
    # starts with the column (market: trade_market_recent and the unique sequence; users:
    # trade_*_user_recent), and no foreign-key check of the users, which the orders' own
    # foreign keys imply (each side's user is its order's user). Issue 13.
    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="trades", db_index=False)
    sequence = models.BigIntegerField(help_text="The engine sequence of the trade: unique per market.")
    price = amount_field()
    quantity = amount_field()
    notional = amount_field(help_text="price x quantity, in quote.")
    taker_side = models.CharField(max_length=4, choices=Side.choices)
    maker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="maker_trades")
    taker_order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="taker_trades")
    maker_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="maker_trades",
                                   db_index=False, db_constraint=False)
    taker_user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="taker_trades",
                                   db_index=False, db_constraint=False)
    maker_fee = amount_field(help_text="In the asset the maker receives.")
    taker_fee = amount_field(help_text="In the asset the taker receives.")
    executed_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "sequence"], name="trade_unique_sequence_per_market"),
        ]
        indexes = [
            models.Index(fields=["market", "-sequence"], name="trade_market_recent"),
            models.Index(fields=["market", "executed_at"], name="trade_market_time"),
            models.Index(fields=["maker_user", "-id"], name="trade_maker_user_recent"),
            models.Index(fields=["taker_user", "-id"], name="trade_taker_user_recent"),
        ]

    def __str__(self) -> str:
        return f"trade {self.market_id}#{self.sequence}"

    @property
    def buyer_id(self) -> int:
        return self.taker_user_id if self.taker_side == Side.BUY else self.maker_user_id

    @property
    def seller_id(self) -> int:
        return self.maker_user_id if self.taker_side == Side.BUY else self.taker_user_id


class Candle(models.Model):
    """One-minute OHLCV of a market, maintained by the matcher with its trades.

    Longer intervals and the 24-hour ticker aggregate these rows.
    """

    market = models.ForeignKey(Market, on_delete=models.PROTECT, related_name="candles")
    opened_at = models.DateTimeField(help_text="Start of the minute (UTC).")
    open = amount_field()
    high = amount_field()
    low = amount_field()
    close = amount_field()
    volume = amount_field(help_text="Base traded.")
    quote_volume = amount_field(help_text="Quote traded.")
    trade_count = models.PositiveIntegerField()
    first_sequence = models.BigIntegerField()
    last_sequence = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["market", "opened_at"], name="candle_unique_minute"),
        ]

    def __str__(self) -> str:
        return f"{self.market_id} {self.opened_at:%Y-%m-%d %H:%M}"
