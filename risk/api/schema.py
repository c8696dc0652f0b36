"""Examples of the RISK_* refusals, for the OpenAPI description of the order endpoints."""

# Per-order limits: 400.
RISK_INVALID_ORDER = (
    ("RISK_MAX_ORDER_QUANTITY", "The order's quantity may be at most 5.", "quantity"),
    ("RISK_MAX_ORDER_NOTIONAL", "The order may be worth at most 250000 USDT (this one: 320000).", "quantity"),
    ("RISK_PRICE_BAND", "The price must lie within 5% of 64000 (60800 to 67200).", "price"),
)
# The account may not trade now: 403.
RISK_FORBIDDEN = (
    ("RISK_USER_FROZEN", "Your account is frozen: contact support.", None),
    ("RISK_USER_CANCEL_ONLY", "Your account may only cancel orders right now.", None),
)
# Counter limits and the exchange halt: 409.
RISK_CONFLICT = (
    ("RISK_MAX_OPEN_ORDERS", "You have 200 open orders; the limit is 200.", None),
    ("RISK_DAILY_ORDER_COUNT", "You placed 100000 orders today (UTC); the limit is 100000.", None),
    ("RISK_DAILY_NOTIONAL", "Orders worth 999000 USDT were placed today (UTC); this one would pass the limit of "
                            "1000000 USDT.", "quantity"),
    ("RISK_MAX_POSITION", "Your BTC position could reach 19.5 with your open orders; this order would pass the limit "
                          "of 20 BTC.", "quantity"),
    ("RISK_EXCHANGE_HALTED", "The exchange is halted: no orders or cancels are accepted.", None),
)
# What an amendment or a cancel-all may meet: 409.
RISK_AMEND_CONFLICT = tuple(example for example in RISK_CONFLICT if example[0] in (
    "RISK_DAILY_NOTIONAL", "RISK_MAX_POSITION", "RISK_EXCHANGE_HALTED"))
# Orders per second: 429.
RISK_RATE = (("RISK_ORDER_RATE", "You placed 50 orders this second; the limit is 50 per second.", None),)
