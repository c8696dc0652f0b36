"""Kill switches from the command line, for when the web tier is down (docs/RISK.md).

    manage.py kill_switch freeze-user USERNAME --reason TEXT
    manage.py kill_switch cancel-only-user USERNAME --reason TEXT
    manage.py kill_switch resume-user USERNAME --reason TEXT
    manage.py kill_switch halt-market SYMBOL --reason TEXT
    manage.py kill_switch resume-market SYMBOL --reason TEXT
    manage.py kill_switch halt-all --reason TEXT
    manage.py kill_switch resume-all --reason TEXT
    manage.py kill_switch status

Needs only PostgreSQL (and Redis to reach the matchers at once: without it
the matchers find the requests in the database when their stream is idle,
and the processes' caches expire within a minute).
"""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from exchange.audit.services import audit_system
from exchange.core.errors import ApplicationError
from exchange.models import Market
from orders.models import OPEN_STATUSES, Order
from risk import services
from risk.models import TradingRestriction

SOURCE = "command"
AUDIT = audit_system("manage.py kill_switch")


class Command(BaseCommand):
    help = "Turn kill switches on and off: freeze or restrict a user, halt a market or the whole exchange."

    def add_arguments(self, parser):
        actions = parser.add_subparsers(dest="action", required=True)
        for name, target, help_text in (
            ("freeze-user", "username", "No orders, amendments or cancels; open orders cancelled, queued ones rejected."),
            ("cancel-only-user", "username", "Cancels only; queued new orders rejected."),
            ("resume-user", "username", "Lift the user's freeze or cancel-only."),
            ("halt-market", "symbol", "Halt one market (through its matcher); new orders refused at once."),
            ("resume-market", "symbol", "Resume a market halted with halt-market."),
            ("halt-all", None, "Halt every market; every new order refused at once."),
            ("resume-all", None, "Resume what halt-all halted."),
        ):
            sub = actions.add_parser(name, help=help_text)
            if target:
                sub.add_argument(target)
            sub.add_argument("--reason", required=True, help="Why: recorded with the change.")
        actions.add_parser("status", help="The kill switches on now.")

    def handle(self, *args, action: str, **options):
        try:
            if action == "status":
                self._status()
                return
            reason = options["reason"]
            message = getattr(self, "_" + action.replace("-", "_"))(options, reason)
        except ApplicationError as error:
            raise CommandError(f"{error.code}: {error.message}") from None
        self.stdout.write(message)

    # --------------------------------------------------------------- actions

    @staticmethod
    def _user(options):
        user = get_user_model().objects.filter(username=options["username"]).first()
        if user is None:
            raise CommandError(f"There is no user {options['username']!r}.")
        return user

    @staticmethod
    def _market(options):
        market = Market.objects.filter(symbol__iexact=options["symbol"]).first()
        if market is None:
            raise CommandError(f"There is no market {options['symbol']!r}.")
        return market

    def _freeze_user(self, options, reason):
        user = self._user(options)
        open_orders = Order.objects.filter(user=user, status__in=OPEN_STATUSES).count()
        restriction, created = services.restriction_set(kind=TradingRestriction.Kind.USER_FROZEN, user=user,
                                                        reason=reason, source=SOURCE, audit=AUDIT)
        if not created:
            return f"{user.username} was already frozen (since {restriction.created_at:%Y-%m-%d %H:%M:%S} UTC)."
        return f"{user.username} frozen; {open_orders} open orders asked to cancel; queued orders will be rejected."

    def _cancel_only_user(self, options, reason):
        user = self._user(options)
        _, created = services.restriction_set(kind=TradingRestriction.Kind.USER_CANCEL_ONLY, user=user,
                                              reason=reason, source=SOURCE, audit=AUDIT)
        return f"{user.username} {'is now' if created else 'was already'} cancel-only."

    def _resume_user(self, options, reason):
        user = self._user(options)
        lifted = services.user_resume(user=user, reason=reason, source=SOURCE, audit=AUDIT)
        return f"{user.username} resumed ({lifted} restriction(s) lifted)." if lifted else \
            f"{user.username} had no restriction."

    def _halt_market(self, options, reason):
        market = self._market(options)
        _, created = services.restriction_set(kind=TradingRestriction.Kind.MARKET_HALTED, market=market,
                                              reason=reason, source=SOURCE, audit=AUDIT)
        return f"{market.symbol} {'halt requested' if created else 'was already halted'}."

    def _resume_market(self, options, reason):
        market = self._market(options)
        if services.market_resume(market=market, reason=reason, source=SOURCE, audit=AUDIT):
            return f"{market.symbol} resume requested."
        return f"{market.symbol} was not halted by a kill switch (its status is {market.status})."

    def _halt_all(self, options, reason):
        _, created = services.restriction_set(kind=TradingRestriction.Kind.EXCHANGE_HALTED, reason=reason,
                                              source=SOURCE, audit=AUDIT)
        return "Every market asked to halt; new orders refused." if created else "The exchange was already halted."

    def _resume_all(self, options, reason):
        if services.exchange_resume(reason=reason, source=SOURCE, audit=AUDIT):
            return "The exchange resumed; markets halted by it asked to resume."
        return "The exchange was not halted."

    def _status(self):
        rows = TradingRestriction.objects.filter(lifted_at__isnull=True).select_related("user", "market").order_by("id")
        if not rows:
            self.stdout.write("No kill switch is on.")
        for row in rows:
            target = row.user.username if row.user_id else row.market.symbol if row.market_id else "exchange"
            self.stdout.write(f"{row.kind:<17} {target:<20} since {row.created_at:%Y-%m-%d %H:%M:%S} UTC "
                              f"({row.source}): {row.reason}")
