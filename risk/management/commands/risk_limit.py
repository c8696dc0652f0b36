"""Risk limits from the command line (docs/RISK.md).

    manage.py risk_limit set (--global | --market SYMBOL | --tier N | --user USERNAME) --max-open-orders N ...
    manage.py risk_limit show [--global | --market SYMBOL | --tier N | --user USERNAME]
    manage.py risk_limit clear (--global | --market SYMBOL | --tier N | --user USERNAME) [--max-open-orders ...]

One flag per limit: --max-open-orders, --max-order-quantity, --max-order-notional,
--max-daily-notional, --max-daily-orders, --max-position, --max-orders-per-second,
--price-band. ``clear`` with no limit flag clears every limit of the scope.
``show --user`` also prints the user's effective limits in every market.
Changes are audited with this command as the actor (``manage.py risk_limit``).
"""

from __future__ import annotations

from decimal import Decimal

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from exchange.audit.services import audit_system
from exchange.core.errors import ApplicationError
from exchange.models import Market
from exchange.profiles import kyc_tier_of
from risk import services
from risk.limits import LimitBook
from risk.models import LIMIT_FIELDS, RiskLimit, Scope

AUDIT = audit_system("manage.py risk_limit")


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _text(value) -> str:
    return f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)


class Command(BaseCommand):
    help = "Set, show or clear risk limits per scope (global, market, KYC tier, user)."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        for action in ("set", "show", "clear"):
            sub = actions.add_parser(action)
            scope = sub.add_mutually_exclusive_group(required=action != "show")
            scope.add_argument("--global", dest="global_scope", action="store_true", help="Every user and market.")
            scope.add_argument("--market", metavar="SYMBOL")
            scope.add_argument("--tier", type=int, metavar="N", help="Users of this KYC tier.")
            scope.add_argument("--user", metavar="USERNAME")
            if action == "set":
                for name in LIMIT_FIELDS:
                    sub.add_argument(_flag(name), dest=name, metavar="VALUE")
            elif action == "clear":
                for name in LIMIT_FIELDS:
                    sub.add_argument(_flag(name), dest=name, action="store_true", help="Clear this limit.")

    def handle(self, *args, action: str, **options):
        try:
            target = self._target(options)
            if action == "set":
                values = {name: options[name] for name in LIMIT_FIELDS if options.get(name) is not None}
                if not values:
                    raise CommandError("Give at least one limit, e.g. --max-open-orders 100.")
                row = services.risk_limit_set(**target, values=values, audit=AUDIT)
                self.stdout.write(f"Set: {self._describe(row)}")
            elif action == "clear":
                names = [name for name in LIMIT_FIELDS if options.get(name)] or None
                row = services.risk_limit_clear(**target, names=names, audit=AUDIT)
                self.stdout.write(f"Left: {self._describe(row)}" if row else "Cleared every limit of the scope.")
            else:
                self._show(target)
        except ApplicationError as error:
            raise CommandError(f"{error.code}: {error.message}") from None

    def _target(self, options) -> dict | None:
        if options.get("global_scope"):
            return {"scope": Scope.GLOBAL}
        if options.get("market"):
            market = Market.objects.filter(symbol__iexact=options["market"]).first()
            if market is None:
                raise CommandError(f"There is no market {options['market']!r}.")
            return {"scope": Scope.MARKET, "market": market}
        if options.get("tier") is not None:
            if options["tier"] < 0:
                raise CommandError("--tier must be 0 or more.")
            return {"scope": Scope.TIER, "kyc_tier": options["tier"]}
        if options.get("user"):
            user = get_user_model().objects.filter(username=options["user"]).first()
            if user is None:
                raise CommandError(f"There is no user {options['user']!r}.")
            return {"scope": Scope.USER, "user": user}
        return None

    @staticmethod
    def _describe(row: RiskLimit) -> str:
        values = [f"{_flag(name)} {_text(getattr(row, name))}" for name in LIMIT_FIELDS if getattr(row, name) is not None]
        return f"{row}: " + (" ".join(values) or "(none)")

    def _show(self, target: dict | None) -> None:
        rows = RiskLimit.objects.select_related("market", "user").order_by("scope", "id")
        if target is not None:
            rows = rows.filter(**target)
        if not rows:
            self.stdout.write("No limit is set" + (" at this scope." if target else "."))
        for row in rows:
            self.stdout.write(self._describe(row))
        if target is not None and target["scope"] == Scope.USER:
            user = target["user"]
            book = LimitBook(list(RiskLimit.objects.all()))
            tier = kyc_tier_of(user.pk)
            self.stdout.write(f"Effective for {user.username} (KYC tier {tier}):")
            for market in Market.objects.order_by("symbol"):
                limits = book.effective(user_id=user.pk, kyc_tier=tier, market_id=market.pk)
                parts = [f"{name}={_text(getattr(limits, name))} ({limits.scopes[name].lower()})"
                         for name in LIMIT_FIELDS if getattr(limits, name) is not None]
                self.stdout.write(f"  {market.symbol}: " + (", ".join(parts) or "no limit"))
