"""What the pre-trade check knows without asking anyone: limits and kill switches, cached per process.

Three per-process caches (exchange/core/localcache.py), each one entry that
holds every row of its kind, so that a cache miss costs one query whoever
the user is, and a hit costs a dict lookup:

- ``limit_book()``: every ``RiskLimit`` row, by scope;
  ``limit_book().effective(user_id=, kyc_tier=, market_id=)`` merges them,
  most specific first per limit (user, tier, market, global), memoised;
- ``restrictions()``: every active ``TradingRestriction``, as sets;
- ``kyc_tier(user_id)``: the user's tier (one entry per user).

Invalidated by the change token: ``RiskLimit``, ``TradingRestriction`` and
``UserProfile`` are registered with ``localcache.watch`` (risk/apps.py), and
the services call ``config_changed()`` after they commit, so every process
drops these within ``localcache.CHECK_EVERY_S`` (0.25 s) of a change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal

from exchange.core.localcache import LocalCache
from exchange.profiles import kyc_tier_of
from risk.models import LIMIT_FIELDS, SCOPE_PRECEDENCE, RiskLimit, Scope, TradingRestriction

# Counters in Redis are integers of this many parts of an asset (10^-8), whatever
# the asset's precision, of any size (risk/counters.py adds them exactly).
UNITS_PER_ONE = 10**8
_UNIT = Decimal(1) / UNITS_PER_ONE
MEMO_MAX = 100_000  # resolved (user, tier, market) combinations kept per process


def to_units(amount: Decimal) -> int:
    """An amount in counter units, rounded up (a reservation never undercounts)."""
    return int((amount * UNITS_PER_ONE).to_integral_value(rounding=ROUND_CEILING))


def from_units(units: int | str | bytes) -> Decimal:
    return (Decimal(int(units)) * _UNIT).normalize()


@dataclass(frozen=True, slots=True)
class EffectiveLimits:
    """The limits that apply to one user in one market; None is no limit.
    ``scopes`` says which scope each limit comes from (for the API and errors)."""

    max_open_orders: int | None = None
    max_order_quantity: Decimal | None = None
    max_order_notional: Decimal | None = None
    max_daily_notional: Decimal | None = None
    max_daily_orders: int | None = None
    max_position: Decimal | None = None
    max_orders_per_second: int | None = None
    price_band: Decimal | None = None
    scopes: dict = field(default_factory=dict)
    # The counter limits as the Lua script takes them: integers, -1 for none.
    max_daily_notional_units: int = -1
    max_position_units: int = -1
    # (max open orders, max orders today, max value today, max position, max orders per second)
    script_args: tuple = (-1, -1, -1, -1, -1)

    @property
    def counted(self) -> bool:
        """Whether any limit needs the Redis counters."""
        return not (self.max_open_orders is None and self.max_daily_orders is None and self.max_daily_notional is None
                    and self.max_position is None and self.max_orders_per_second is None)


class LimitBook:
    """Every RiskLimit row, by scope and target; ``effective()`` resolves one (user, tier, market)."""

    def __init__(self, rows: list[RiskLimit]):
        self.by_target: dict[tuple, RiskLimit] = {}
        for row in rows:
            target = {Scope.GLOBAL: None, Scope.MARKET: row.market_id, Scope.TIER: row.kyc_tier,
                      Scope.USER: row.user_id}[row.scope]
            self.by_target[(row.scope, target)] = row
        self._memo: dict[tuple[int, int, int], EffectiveLimits] = {}

    def effective(self, *, user_id: int, kyc_tier: int, market_id: int) -> EffectiveLimits:
        key = (user_id, kyc_tier, market_id)
        limits = self._memo.get(key)
        if limits is None:
            if len(self._memo) >= MEMO_MAX:
                self._memo.clear()
            limits = self._memo[key] = self._resolve(user_id, kyc_tier, market_id)
        return limits

    def _resolve(self, user_id: int, kyc_tier: int, market_id: int) -> EffectiveLimits:
        targets = {Scope.USER: user_id, Scope.TIER: kyc_tier, Scope.MARKET: market_id, Scope.GLOBAL: None}
        rows = [(scope, self.by_target.get((scope, targets[scope]))) for scope in SCOPE_PRECEDENCE]
        values, scopes = {}, {}
        for name in LIMIT_FIELDS:
            for scope, row in rows:
                if row is not None and getattr(row, name) is not None:
                    values[name], scopes[name] = getattr(row, name), scope.value
                    break
        daily, position = values.get("max_daily_notional"), values.get("max_position")
        daily_units = -1 if daily is None else to_units(daily)
        position_units = -1 if position is None else to_units(position)

        def count(name):
            return -1 if values.get(name) is None else values[name]

        return EffectiveLimits(
            **values, scopes=scopes, max_daily_notional_units=daily_units, max_position_units=position_units,
            script_args=(count("max_open_orders"), count("max_daily_orders"), daily_units, position_units,
                         count("max_orders_per_second")),
        )

    def rows_for_user(self, *, user_id: int, kyc_tier: int) -> list[RiskLimit]:
        """The rows that can apply to a user (any market): for display."""
        return [row for (scope, target), row in self.by_target.items()
                if scope in (Scope.GLOBAL, Scope.MARKET) or (scope, target) in ((Scope.USER, user_id),
                                                                               (Scope.TIER, kyc_tier))]


@dataclass(frozen=True, slots=True)
class Restrictions:
    """The kill switches on now."""

    exchange_halted: bool = False
    frozen: frozenset = frozenset()  # user ids
    cancel_only: frozenset = frozenset()  # user ids
    halted_markets: frozenset = frozenset()  # market ids

    def user_state(self, user_id: int) -> str:
        """ACTIVE, CANCEL_ONLY or FROZEN (frozen wins when both are set)."""
        if user_id in self.frozen:
            return "FROZEN"
        if user_id in self.cancel_only:
            return "CANCEL_ONLY"
        return "ACTIVE"


def _load_limits(_key) -> LimitBook:
    return LimitBook(list(RiskLimit.objects.all()))


def _load_restrictions(_key) -> Restrictions:
    rows = list(TradingRestriction.objects.filter(lifted_at__isnull=True).values_list("kind", "user_id", "market_id"))
    kinds = TradingRestriction.Kind
    return Restrictions(
        exchange_halted=any(kind == kinds.EXCHANGE_HALTED for kind, _, _ in rows),
        frozen=frozenset(user for kind, user, _ in rows if kind == kinds.USER_FROZEN),
        cancel_only=frozenset(user for kind, user, _ in rows if kind == kinds.USER_CANCEL_ONLY),
        halted_markets=frozenset(market for kind, _, market in rows if kind == kinds.MARKET_HALTED),
    )


_limits_cache: LocalCache[None, LimitBook] = LocalCache("risk.limits", _load_limits, max_age_s=60)
_restrictions_cache: LocalCache[None, Restrictions] = LocalCache("risk.restrictions", _load_restrictions, max_age_s=60)
_tier_cache: LocalCache[int, int] = LocalCache("risk.kyc_tier", kyc_tier_of, max_age_s=60)


def limit_book() -> LimitBook:
    return _limits_cache.get(None)


def restrictions() -> Restrictions:
    return _restrictions_cache.get(None)


def kyc_tier(user_id: int) -> int:
    return _tier_cache.get(user_id)


# An async caller checks ``cached`` then reads the caches on its event loop:
# an entry that would expire in between would be loaded there (a database
# query on the loop, which Django refuses). So an entry this close to its
# expiry counts as not cached, and ``warm`` loads it again first.
_MARGIN_S = 1.0


def _risk_caches(user_id: int):
    return ((_limits_cache, None), (_restrictions_cache, None), (_tier_cache, user_id))


def cached(user_id: int) -> bool:
    """Whether everything a pre-trade check of ``user_id`` reads is in this process's caches for
    at least another second (an async caller warms them with ``warm`` in a thread when not:
    loading reads the database)."""
    return all(cache.peek(key, margin_s=_MARGIN_S) is not None for cache, key in _risk_caches(user_id))


def warm(user_id: int) -> None:
    for cache, key in _risk_caches(user_id):
        if cache.peek(key, margin_s=_MARGIN_S) is None:
            cache.load(key)
