"""The counters the pre-trade limits compare against, in Redis, kept consistent with the database.

Per user, two hashes (hash-tagged ``{user_id}`` so they would share a slot in
a cluster) and a per-second key:

``risk:{U}:c`` (counters)
    ``ready``      present once the hash was built from the database; absent = cold
    ``day``        the UTC day (YYYYMMDD) the daily fields count
    ``n``          orders placed that day
    ``v:<asset>``  value of the orders placed that day, per quote asset
    ``p:<asset>``  net position that day, per base asset: bought minus sold
    ``xb:<asset>`` ``xs:<asset>``  what the user's open buy / sell orders could
                   still add to the position (the sum of their entries below)
    ``tw:<market>`` the last trade sequence of that market applied here
``risk:{U}:o`` (open orders)
    ``<client_order_id>`` -> ``"<base asset>:<b|s>:<remaining>"`` for every open order
``risk:{U}:r:<second>``  orders placed in that second (2 s expiry; kept only while a
    per-second limit applies)

Amounts are integers of 10^-8 of the asset (``limits.to_units``), of any size,
added and compared exactly by the scripts (see ``_LUA_ARITHMETIC``).

Who writes what:

- the order path's ONE Lua call (``RESERVE_NEW``, risk/pretrade.py) checks the
  limits and, if they hold, adds the order: its entry, ``n``, ``v``, ``x`` and
  the second's count. ``RELEASE_NEW`` undoes exactly that when the database
  refuses the order after all;
- the event consumer (risk/consumer.py), from the matcher's events:
  ``trade.executed`` moves the filled quantity from the order's entry (and
  ``x``) to ``p`` (``FILL``: skipped when the trade's sequence is not above the
  market's ``tw``, so a redelivered or already-counted trade counts once);
  an ``order.updated`` that ends an order deletes its entry and takes what
  was left of it off ``x`` (``CLOSE``: only the call that deletes the entry
  does so, so a redelivery does nothing);
- ``counters_rebuild`` builds both hashes from the database when ``ready`` is
  missing (Redis flushed or restarted, or the keys expired after a week
  without activity), never from zero, and only if they are still cold when it
  writes (``REBUILD``), so two rebuilders cannot both count;
- ``reservations_reconcile`` (Celery, every minute) rebuilds them for a user
  whose open-order hash has kept an entry without an open order in the
  database for a minute: a reservation whose web worker died before placing
  or releasing it.

Why this is exact despite the consumer's lag: the order path and the
consumer never touch the same quantity twice. An order's entry exists from
its reservation until the event that ends it; a lagging end only keeps it
counted a little longer (more conservative). Positions move by fills alone,
and a fill leaves the entry as it enters ``p``, so the potential position
(``p`` + ``x``) does not move with a fill, whenever its event arrives. A
rebuild reads each market's last sequence first, then counts only the fills
at or below it, and sets ``tw`` to it: the consumer applies exactly the fills
after it. Open orders that filled after that point are counted as of it (the
later fills are left to the consumer), so no fill is counted twice or missed;
an order that ended between the two reads is left out, and its last fills
count when their events arrive (a lag's worth, right after a rebuild).

What is not exact (documented in docs/RISK.md): the value placed today is
rebuilt from the orders' terms (a market order's value from its fills); an
order placed while its counters were being lost (a flush in the few
milliseconds between its reservation and its commit) is missing until the
next rebuild; the per-second count starts again from zero.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone as dt_timezone
from decimal import Decimal

from django.db import connection
from django.db.models import Q

from exchange.core.redis import get_redis
from exchange.models import Market
from matching.models import MarketState
from orders.models import OPEN_STATUSES, PRICED_TYPES, Order, Side, Trade
from risk.limits import from_units, to_units

TTL_MS = 7 * 24 * 3600 * 1000  # counters expire a week after the last day they were used; rebuilt when needed


def counters_key(user_id: int) -> str:
    return f"risk:{{{int(user_id)}}}:c"


def open_key(user_id: int) -> str:
    return f"risk:{{{int(user_id)}}}:o"


def rate_key(user_id: int, second: int) -> str:
    return f"risk:{{{int(user_id)}}}:r:{second}"


def day_of(epoch_s: float) -> str:
    return time.strftime("%Y%m%d", time.gmtime(epoch_s))


# Shared Lua. Amounts (values, positions, what orders could add) are integer
# strings of 10^-8 units that can exceed 64 bits (an order may be worth up to
# 10^20, and a token's supply may be 10^15 or more), so the scripts add and
# compare them exactly as pairs {hi, lo} = hi x 10^15 + lo, 0 <= lo < 10^15,
# each part exact in Lua's doubles. Counts (orders) are small numbers.
# (Each script defines only the helpers it uses: defining a function costs at
# every call.)
_LUA_ARITHMETIC = """
local B = 1e15
local ZERO = {0, 0}
local function amount(s)
  if not s then return ZERO end
  local negative = string.sub(s, 1, 1) == '-'
  if negative then s = string.sub(s, 2) end
  local n = #s
  local hi, lo = 0, tonumber(s)
  if n > 15 then hi, lo = tonumber(string.sub(s, 1, n - 15)), tonumber(string.sub(s, n - 14)) end
  if negative then
    if lo > 0 then return {-hi - 1, B - lo} end
    return {-hi, 0}
  end
  return {hi, lo}
end
local function negated(a)
  if a[2] > 0 then return {-a[1] - 1, B - a[2]} end
  return {-a[1], 0}
end
local function plus(a, b)
  local hi, lo = a[1] + b[1], a[2] + b[2]
  if lo >= B then hi, lo = hi + 1, lo - B end
  return {hi, lo}
end
local function less(a, b) return a[1] < b[1] or (a[1] == b[1] and a[2] < b[2]) end
local function text(a)
  if a[1] < 0 then return '-' .. text(negated(a)) end
  if a[1] == 0 then return string.format('%.0f', a[2]) end
  return string.format('%.0f', a[1]) .. string.format('%015.0f', a[2])
end
-- Over a limit given as text ('-1': no limit)?
local function over(limit, a) return limit ~= '-1' and less(amount(limit), a) end
"""
_LUA_FIELDS = """
local function field(key, name) return amount(redis.call('HGET', key, name)) end
local function add(key, name, delta) redis.call('HSET', key, name, text(plus(field(key, name), delta))) end
"""
_LUA_ROLL = """
-- A new day: the daily fields start again, and the keys' expiry moves a week on (so
-- the keys of a user who trades every day never expire, and an idle user's go).
local function roll(main, open, day, ttl)
  for _, f in ipairs(redis.call('HKEYS', main)) do
    local head = string.sub(f, 1, 2)
    if f == 'n' or head == 'v:' or head == 'p:' then redis.call('HDEL', main, f) end
  end
  redis.call('HSET', main, 'day', day)
  redis.call('PEXPIRE', main, ttl)
  redis.call('PEXPIRE', open, ttl)
end
"""
_LUA_ENTRIES = """
-- An open order's entry: its base asset, side, and what it could still add to the position.
local function entry_of(open, coid)
  local entry = redis.call('HGET', open, coid)
  if not entry then return nil end
  local asset, side, rem = string.match(entry, '^(%d+):(%a):(%-?%d+)$')
  return asset, side, amount(rem)
end
local function entry_set(open, coid, asset, side, rem) redis.call('HSET', open, coid, asset .. ':' .. side .. ':' .. text(rem)) end
"""

# KEYS: counters, open orders, this second's count.
# ARGV: 1 day, 2 client order id, 3 base asset, 4 side b|s, 5 position reservation, 6 quote asset,
#       7 value, 8 max open orders, 9 max orders today, 10 max value today, 11 max position,
#       12 max orders per second (-1: no limit), 13 expiry ms.
# Reply: {0} reserved; {1} cold; {2, code, used} refused, nothing reserved; {3} the
# client order id is already open (a replay: nothing reserved, the database answers it).
RESERVE_NEW = _LUA_ARITHMETIC + _LUA_ROLL + """
local main, open, rate = KEYS[1], KEYS[2], KEYS[3]
local day, coid, asset, side = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local reserved, added_value = amount(ARGV[5]), amount(ARGV[7])
local value_field, position_field, exposure_field = 'v:' .. ARGV[6], 'p:' .. asset, 'x' .. side .. ':' .. asset
local f = redis.call('HMGET', main, 'ready', 'day', 'n', value_field, position_field, exposure_field)
if not f[1] then return {1} end
local orders, value, position, open_side = tonumber(f[3] or '0'), amount(f[4]), amount(f[5]), amount(f[6])
if f[2] ~= day then
  roll(main, open, day, ARGV[13])
  orders, value, position = 0, ZERO, ZERO
end
local max_open, max_orders, max_rate = tonumber(ARGV[8]), tonumber(ARGV[9]), tonumber(ARGV[12])
if max_open >= 0 then
  local open_now = redis.call('HLEN', open)
  if open_now + 1 > max_open then return {2, 'RISK_MAX_OPEN_ORDERS', tostring(open_now)} end
end
if max_orders >= 0 and orders + 1 > max_orders then return {2, 'RISK_DAILY_ORDER_COUNT', tostring(orders)} end
if max_rate >= 0 then
  local rate_now = tonumber(redis.call('GET', rate) or '0')
  if rate_now + 1 > max_rate then return {2, 'RISK_ORDER_RATE', tostring(rate_now)} end
end
local new_value = plus(value, added_value)
if over(ARGV[10], new_value) then return {2, 'RISK_DAILY_NOTIONAL', text(value)} end
local exposure
if side == 'b' then exposure = plus(position, open_side) else exposure = plus(open_side, negated(position)) end
if over(ARGV[11], plus(exposure, reserved)) then return {2, 'RISK_MAX_POSITION', text(exposure)} end
if redis.call('HSETNX', open, coid, asset .. ':' .. side .. ':' .. ARGV[5]) == 0 then return {3} end
redis.call('HSET', main, 'n', tostring(orders + 1), value_field, text(new_value),
           exposure_field, text(plus(open_side, reserved)))
if max_rate >= 0 and redis.call('INCR', rate) == 1 then redis.call('PEXPIRE', rate, 2000) end
return {0}
"""

# KEYS: counters, open orders, the second's count. ARGV: 1 day, 2 client order id, 3 quote asset,
# 4 value, 5 whether the second's count was incremented (1|0).
RELEASE_NEW = _LUA_ARITHMETIC + _LUA_FIELDS + _LUA_ENTRIES + """
local main, open, rate = KEYS[1], KEYS[2], KEYS[3]
local asset, side, rem = entry_of(open, ARGV[2])
if asset then
  redis.call('HDEL', open, ARGV[2])
  add(main, 'x' .. side .. ':' .. asset, negated(rem))
end
if redis.call('HGET', main, 'day') == ARGV[1] then
  redis.call('HINCRBY', main, 'n', -1)
  add(main, 'v:' .. ARGV[3], negated(amount(ARGV[4])))
end
if ARGV[5] == '1' and redis.call('EXISTS', rate) == 1 then redis.call('DECR', rate) end
return 0
"""

# An amendment: the extra position its new quantity could add, and the extra value.
# KEYS: counters, open orders. ARGV: 1 day, 2 client order id, 3 extra position, 4 quote asset,
# 5 extra value, 6 max value today, 7 max position, 8 expiry ms.
# Reply: {0, 1|0 (whether the order's entry was found and grown)}; {1} cold; {2, code, used}.
RESERVE_AMEND = _LUA_ARITHMETIC + _LUA_FIELDS + _LUA_ROLL + _LUA_ENTRIES + """
local main, open = KEYS[1], KEYS[2]
local extra_position, extra_value = amount(ARGV[3]), amount(ARGV[5])
local today = redis.call('HMGET', main, 'ready', 'day')
if not today[1] then return {1} end
if today[2] ~= ARGV[1] then roll(main, open, ARGV[1], ARGV[8]) end
local value_field = 'v:' .. ARGV[4]
local value = field(main, value_field)
if over(ARGV[6], plus(value, extra_value)) then return {2, 'RISK_DAILY_NOTIONAL', text(value)} end
local asset, side, rem = entry_of(open, ARGV[2])
if asset then
  local position, open_side = field(main, 'p:' .. asset), field(main, 'x' .. side .. ':' .. asset)
  local exposure
  if side == 'b' then exposure = plus(position, open_side) else exposure = plus(open_side, negated(position)) end
  if over(ARGV[7], plus(exposure, extra_position)) then return {2, 'RISK_MAX_POSITION', text(exposure)} end
  entry_set(open, ARGV[2], asset, side, plus(rem, extra_position))
  redis.call('HSET', main, 'x' .. side .. ':' .. asset, text(plus(open_side, extra_position)))
end
redis.call('HSET', main, value_field, text(plus(value, extra_value)))
if asset then return {0, 1} end
return {0, 0}
"""

# KEYS: counters, open orders. ARGV: 1 day, 2 client order id, 3 extra position, 4 quote asset,
# 5 extra value, 6 whether the entry was grown (1|0).
RELEASE_AMEND = _LUA_ARITHMETIC + _LUA_FIELDS + _LUA_ENTRIES + """
local main, open = KEYS[1], KEYS[2]
if ARGV[6] == '1' then
  local asset, side, rem = entry_of(open, ARGV[2])
  if asset then
    local take = amount(ARGV[3])
    if less(rem, take) then take = rem end
    entry_set(open, ARGV[2], asset, side, plus(rem, negated(take)))
    add(main, 'x' .. side .. ':' .. asset, negated(take))
  end
end
if redis.call('HGET', main, 'day') == ARGV[1] then add(main, 'v:' .. ARGV[4], negated(amount(ARGV[5]))) end
return 0
"""

# A trade, for one of its users. KEYS: counters, open orders.
# ARGV: 1 market id, 2 trade sequence, 3 the trade's day, 4 expiry ms, then per leg of this
# user (two for a self-trade): client order id, base asset, side b|s, quantity.
# Reply: -1 cold (nothing done), 0 already counted, 1 applied.
FILL = _LUA_ARITHMETIC + _LUA_FIELDS + _LUA_ROLL + _LUA_ENTRIES + """
local main, open = KEYS[1], KEYS[2]
if redis.call('HEXISTS', main, 'ready') == 0 then return -1 end
local mark = 'tw:' .. ARGV[1]
if tonumber(redis.call('HGET', main, mark) or '-1') >= tonumber(ARGV[2]) then return 0 end
redis.call('HSET', main, mark, ARGV[2])
local today = redis.call('HGET', main, 'day')
if (not today) or ARGV[3] > today then roll(main, open, ARGV[3], ARGV[4]); today = ARGV[3] end
for i = 5, #ARGV, 4 do
  local coid, base, leg_side, quantity = ARGV[i], ARGV[i + 1], ARGV[i + 2], amount(ARGV[i + 3])
  if ARGV[3] == today then
    if leg_side == 'b' then add(main, 'p:' .. base, quantity) else add(main, 'p:' .. base, negated(quantity)) end
  end
  local asset, side, rem = entry_of(open, coid)
  if asset then
    local take = quantity
    if less(rem, take) then take = rem end
    if less(take, ZERO) then take = ZERO end
    entry_set(open, coid, asset, side, plus(rem, negated(take)))
    add(main, 'x' .. side .. ':' .. asset, negated(take))
  end
end
return 1
"""

# An order that ended. KEYS: counters, open orders. ARGV: 1 client order id.
# Reply: -1 cold, 0 not counted (already closed, or never reserved), 1 closed now.
CLOSE = _LUA_ARITHMETIC + _LUA_FIELDS + _LUA_ENTRIES + """
local main, open = KEYS[1], KEYS[2]
if redis.call('HEXISTS', main, 'ready') == 0 then return -1 end
local asset, side, rem = entry_of(open, ARGV[1])
if not asset then return 0 end
redis.call('HDEL', open, ARGV[1])
add(main, 'x' .. side .. ':' .. asset, negated(rem))
return 1
"""

# KEYS: counters, open orders. ARGV: 1 expiry ms, 2 number of counter fields+values, then
# those, then the open orders' fields and values. Writes only if still cold; reply 1 if it wrote.
REBUILD = """
local main, open = KEYS[1], KEYS[2]
if redis.call('HEXISTS', main, 'ready') == 1 then return 0 end
redis.call('DEL', main, open)
local function hset_range(key, first, last)
  for start = first, last, 500 do
    local args = {}
    for i = start, math.min(start + 499, last) do args[#args + 1] = ARGV[i] end
    if #args > 0 then redis.call('HSET', key, unpack(args)) end
  end
end
local split = 2 + tonumber(ARGV[2])
hset_range(main, 3, split)
hset_range(open, split + 1, #ARGV)
redis.call('PEXPIRE', main, ARGV[1])
if redis.call('EXISTS', open) == 1 then redis.call('PEXPIRE', open, ARGV[1]) end
return 1
"""

_scripts: dict[tuple[int, str], object] = {}


def script(source: str, client=None):
    """The registered redis-py Script for ``source`` (EVALSHA, loaded once per client)."""
    client = client or get_redis()
    key = (id(client), source)
    registered = _scripts.get(key)
    if registered is None:
        registered = _scripts[key] = client.register_script(source)
    return registered


# ------------------------------------------------------------- amounts of an order


def position_reservation(*, side: str, quantity: Decimal | None, quote_quantity: Decimal | None,
                         hold_amount: Decimal | None, price_estimate: Decimal | None) -> Decimal:
    """The most base asset an order can buy or sell: its quantity; a sell by quote amount
    holds (and may sell at most) ``hold_amount`` of base; a buy by quote amount is
    estimated at ``price_estimate`` (its stop price, else the market's reference), 0
    without one (it can then only fill against a book that has no reference yet)."""
    if quantity is not None:
        return quantity
    if side == Side.SELL:
        return hold_amount or Decimal(0)
    if price_estimate:
        return quote_quantity / price_estimate
    return Decimal(0)


def order_value(*, order_type: str, price: Decimal | None, quantity: Decimal | None,
                quote_quantity: Decimal | None, price_estimate: Decimal | None) -> Decimal:
    """What an order is worth in its quote asset: price x quantity, or its quote amount, or
    (market orders by quantity) quantity x ``price_estimate``, 0 without an estimate."""
    if order_type in PRICED_TYPES:
        return price * quantity
    if quote_quantity is not None:
        return quote_quantity
    return quantity * price_estimate if price_estimate else Decimal(0)


# ------------------------------------------------------------------ the rebuild


@dataclass(frozen=True)
class _MarketInfo:
    base_id: int
    quote_id: int
    last_sequence: int
    last_price: Decimal | None


def _markets() -> dict[int, _MarketInfo]:
    """Every market's assets, and its last sequence and price (read first: see the module docstring)."""
    states = {row[0]: row[1:] for row in MarketState.objects.values_list("market_id", "last_sequence", "last_price")}
    return {
        market_id: _MarketInfo(base_id, quote_id, *states.get(market_id, (0, None)))
        for market_id, base_id, quote_id in Market.objects.values_list("id", "base_id", "quote_id")
    }


def _recent(queryset, time_field: str, since: datetime, fields: tuple, chunk: int = 2000):
    """Rows of ``queryset`` newest id first, until ``time_field`` is older than ``since``
    (by a minute's margin: ids and times are assigned by different clocks).
    Walks the (user, -id) indexes instead of reading the user's whole history."""
    margin = since - timedelta(minutes=1)
    last_id = None
    while True:
        page = queryset if last_id is None else queryset.filter(id__lt=last_id)
        rows = list(page.order_by("-id").values_list("id", time_field, *fields)[:chunk])
        for row in rows:
            if row[1] < margin:
                return
            if row[1] >= since:
                yield row[2:]
        if len(rows) < chunk:
            return
        last_id = rows[-1][0]


def counters_snapshot(*, user_id: int, now_s: float | None = None) -> tuple[dict, dict]:
    """(counter fields, open-order entries) of ``user_id`` as the database says now."""
    now_s = time.time() if now_s is None else now_s
    day = day_of(now_s)
    day_start = datetime.fromtimestamp(now_s, tz=dt_timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)
    markets = _markets()  # first: the watermarks
    main: dict[str, int | str] = {"ready": 1, "day": day}
    for market_id, info in markets.items():
        main[f"tw:{market_id}"] = info.last_sequence

    # Today's fills up to each market's watermark: net bought minus sold per base asset.
    position: dict[int, int] = defaultdict(int)
    for role, side_of in (("maker_user_id", lambda taker_side: Side.SELL if taker_side == Side.BUY else Side.BUY),
                          ("taker_user_id", lambda taker_side: taker_side)):
        trades = Trade.objects.filter(**{role: user_id})
        for market_id, sequence, taker_side, quantity in _recent(
                trades, "executed_at", day_start, ("market_id", "sequence", "taker_side", "quantity")):
            info = markets[market_id]
            if sequence <= info.last_sequence:
                units = to_units(quantity)
                position[info.base_id] += units if side_of(taker_side) == Side.BUY else -units

    # Open orders, counted as of the watermarks: fills after them are added back.
    rows = list(Order.objects.filter(user_id=user_id, status__in=OPEN_STATUSES).values_list(
        "id", "client_order_id", "market_id", "side", "quantity", "quote_quantity", "hold_amount", "stop_price",
        "filled_quantity", "last_sequence"))
    late = [row[0] for row in rows if row[9] is not None and row[9] > markets[row[2]].last_sequence]
    filled_late: dict[int, Decimal] = defaultdict(Decimal)
    if late:
        for maker_id, taker_id, market_id, sequence, quantity in Trade.objects.filter(
                Q(maker_order_id__in=late) | Q(taker_order_id__in=late)).values_list("maker_order_id", "taker_order_id", "market_id", "sequence", "quantity"):
            if sequence > markets[market_id].last_sequence:
                for order_id in {maker_id, taker_id} & set(late):
                    filled_late[order_id] += quantity
    entries: dict[str, str] = {}
    exposure: dict[str, int] = defaultdict(int)
    for order_id, coid, market_id, side, quantity, quote_quantity, hold, stop, filled, _ in rows:
        info = markets[market_id]
        reserved = position_reservation(side=side, quantity=quantity, quote_quantity=quote_quantity, hold_amount=hold,
                                        price_estimate=stop or info.last_price)
        remaining = max(0, to_units(reserved) - to_units(filled - filled_late[order_id]))
        letter = "b" if side == Side.BUY else "s"
        entries[coid] = f"{info.base_id}:{letter}:{remaining}"
        exposure[f"x{letter}:{info.base_id}"] += remaining

    # Today's orders: how many, and their value per quote asset.
    count, value = 0, defaultdict(int)
    placed = Order.objects.filter(user_id=user_id)
    for market_id, order_type, status, price, quantity, quote_quantity, stop, filled_notional in _recent(
            placed, "created_at", day_start,
            ("market_id", "type", "status", "price", "quantity", "quote_quantity", "stop_price", "filled_notional")):
        info = markets[market_id]
        count += 1
        if order_type not in PRICED_TYPES and quote_quantity is None and status not in OPEN_STATUSES:
            amount = filled_notional  # a market order by quantity that ended: what it traded
        else:
            amount = order_value(order_type=order_type, price=price, quantity=quantity, quote_quantity=quote_quantity,
                                 price_estimate=stop or info.last_price)
        value[info.quote_id] += to_units(amount)

    main["n"] = count
    main.update({f"v:{asset}": units for asset, units in value.items()})
    main.update({f"p:{asset}": units for asset, units in position.items()})
    main.update(exposure)
    return main, entries


def counters_rebuild(*, user_id: int, client=None) -> bool:
    """Build the user's counters from the database if they are cold; returns whether this
    call wrote them (False: they were warm, or another process rebuilt them first).
    Reads the database (a handful of queries over the user's recent orders and trades)."""
    main, entries = counters_snapshot(user_id=user_id)
    flat_main = [str(item) for pair in main.items() for item in pair]
    flat_open = [str(item) for pair in entries.items() for item in pair]
    return bool(script(REBUILD, client)(keys=[counters_key(user_id), open_key(user_id)],
                                        args=[TTL_MS, len(flat_main), *flat_main, *flat_open], client=client))


# ------------------------------------------------------------------ reading them


@dataclass(frozen=True)
class Usage:
    """A user's counters, as the pre-trade check sees them."""

    open_orders: int
    orders_today: int
    value_today: dict  # quote asset id -> Decimal
    position_today: dict  # base asset id -> Decimal (bought minus sold)
    open_buy: dict  # base asset id -> Decimal
    open_sell: dict  # base asset id -> Decimal


def usage_read(*, user_id: int, client=None) -> Usage:
    """The user's counters (rebuilt first if cold). Two Redis round trips."""
    client = client or get_redis()
    for _ in range(2):
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(counters_key(user_id))
        pipe.hlen(open_key(user_id))
        fields, open_orders = pipe.execute()
        fields = {key.decode(): value.decode() for key, value in fields.items()}
        if "ready" in fields:
            break
        counters_rebuild(user_id=user_id, client=client)
    today = fields.get("day") == day_of(time.time())

    def per_asset(prefix: str, daily: bool) -> dict:
        if daily and not today:
            return {}
        return {int(name[len(prefix):]): from_units(value) for name, value in fields.items()
                if name.startswith(prefix) and int(value)}

    return Usage(
        open_orders=open_orders,
        orders_today=int(fields.get("n", 0)) if today else 0,
        value_today=per_asset("v:", True),
        position_today=per_asset("p:", True),
        open_buy=per_asset("xb:", False),
        open_sell=per_asset("xs:", False),
    )


# ------------------------------------------------------------------ the reconciler

SUSPECTS_KEY = "risk:reconcile:suspects"  # "<user>:<client_order_id>" -> when first seen without an open order
RECONCILE_MIN_AGE_S = 60.0

_OPEN_AMONG = """
    SELECT o.user_id, o.client_order_id
    FROM unnest(%s::integer[], %s::varchar[]) AS k(user_id, client_order_id)
    JOIN orders_order o ON o.user_id = k.user_id AND o.client_order_id = k.client_order_id
    WHERE o.status = ANY(%s::varchar[])
"""


def _open_among(pairs: list[tuple[int, str]]) -> set[tuple[int, str]]:
    """Which of these (user, client_order_id) are open orders in the database (the unique index, per pair)."""
    with connection.cursor() as cursor:
        cursor.execute(_OPEN_AMONG, [[user for user, _ in pairs], [coid for _, coid in pairs], list(OPEN_STATUSES)])
        return set(cursor.fetchall())


_OPEN_COUNTS = """
    SELECT user_id, count(*) FROM orders_order WHERE status = ANY(%s::varchar[]) GROUP BY user_id
"""


def _open_counts() -> dict[int, int]:
    """Open orders per user in the database (the open-status partial indexes, no Python per order)."""
    with connection.cursor() as cursor:
        cursor.execute(_OPEN_COUNTS, [list(OPEN_STATUSES)])
        return dict(cursor.fetchall())


def _entry_counts(client, keys_per_call: int = 1000) -> dict[int, int]:
    """Open-order entries per user in Redis: one pipelined HLEN per SCAN page."""
    counts: dict[int, int] = {}
    keys: list[bytes] = []

    def flush() -> None:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.hlen(key)
        for key, count in zip(keys, pipe.execute()):
            if count:
                counts[int(key.decode().split("{", 1)[1].split("}", 1)[0])] = count
        keys.clear()

    for key in client.scan_iter(match="risk:{*}:o", count=keys_per_call):
        keys.append(key)
        if len(keys) >= keys_per_call:
            flush()
    if keys:
        flush()
    return counts


def reservations_reconcile(*, client=None, now_s: float | None = None, min_age_s: float = RECONCILE_MIN_AGE_S,
                           chunk: int = 5000) -> list[int]:
    """Rebuild the counters of every user with an open-order entry that has had no open order
    in the database for ``min_age_s`` or more; returns those users.

    Such an entry is a reservation nobody will give back: its web worker died (or lost Redis)
    between reserving the order and placing or releasing it, or the event that ends its order
    was never applied. It would count against the user's open-order and position limits for
    good. An entry seen without its order only once may be an order being placed (its
    reservation comes first, by milliseconds) or one whose end the consumer has not read yet
    (a second or so): each pass keeps what it saw (``SUSPECTS_KEY``) and acts only on entries
    already seen ``min_age_s`` before. The rebuild is the one that follows a Redis flush, so
    the counters are as exact as after one (``counters_snapshot``).

    A pass costs O(users) in Python, not O(open orders): it compares each user's number of
    entries (HLEN) with their number of open orders (one GROUP BY), and reads entries only
    of the users with more entries than orders. (A leaked entry hides only if the same user
    also has an open order without an entry, two faults at once: see docs/RISK.md.)"""
    client = client or get_redis()
    now_s = time.time() if now_s is None else now_s
    seen = {member.decode(): float(when) for member, when in client.hgetall(SUSPECTS_KEY).items()}
    suspects: dict[str, float] = {}
    stale: set[int] = set()

    def check(pairs: list[tuple[int, str]]) -> None:
        for user_id, coid in set(pairs) - _open_among(pairs):
            member = f"{user_id}:{coid}"
            first = suspects[member] = seen.get(member, now_s)
            if now_s - first >= min_age_s:
                stale.add(user_id)

    entries = _entry_counts(client)
    orders = _open_counts()
    users = sorted(user_id for user_id, count in entries.items() if count > orders.get(user_id, 0))
    pairs: list[tuple[int, str]] = []
    for start in range(0, len(users), 100):
        pipe = client.pipeline(transaction=False)
        for user_id in users[start:start + 100]:
            pipe.hkeys(open_key(user_id))
        for user_id, coids in zip(users[start:start + 100], pipe.execute()):
            pairs.extend((user_id, coid.decode()) for coid in coids)
        if len(pairs) >= chunk:
            check(pairs)
            pairs = []
    if pairs:
        check(pairs)

    for user_id in sorted(stale):
        client.hdel(counters_key(user_id), "ready")  # cold: the rebuild below replaces both hashes
        counters_rebuild(user_id=user_id, client=client)
    pipe = client.pipeline(transaction=True)
    pipe.delete(SUSPECTS_KEY)
    remaining = {member: when for member, when in suspects.items() if int(member.split(":", 1)[0]) not in stale}
    if remaining:
        pipe.hset(SUSPECTS_KEY, mapping=remaining)
    pipe.execute()
    return sorted(stale)
