"""Ledger invariants that depend on orders: each order holds what it still needs.

Registered with the wallet's ``check_ledger`` for holds "order:<id>":

- every order has its hold, of its user, in the asset it pays with (quote
  for a buy, base for a sell), and every "order:" hold has its order;
- an order not yet sequenced (PENDING) or waiting for its trigger
  (UNTRIGGERED) still holds everything placement held;
- a resting order holds exactly what its unfilled part needs (price x
  remaining quantity of quote for a buy, the remaining quantity of base for a
  sell); while an amendment of it waits for the matcher, at least that (the
  hold then also covers the new terms);
- an order that ended (FILLED, CANCELED, EXPIRED, REJECTED) has a closed hold.

Retention deletes orders that ended long ago (``exchange.audit.retention``)
but never the ledger: a closed "order:" hold closed before the orders'
retention cutoff may have lost its order.
"""

from __future__ import annotations

from django.conf import settings
from django.db import connection

from wallet.invariants import ROW_LIMIT, Violation

_MISMATCHED_SQL = """
WITH waiting AS (
    SELECT DISTINCT order_id FROM orders_orderamendment WHERE status = 'REQUESTED'
), expected AS (
    SELECT o.id, o.status, o.user_id, w.order_id IS NOT NULL AS amending,
           CASE WHEN o.side = 'BUY' THEN m.quote_id ELSE m.base_id END AS asset_id,
           CASE
               WHEN o.status IN ('PENDING', 'UNTRIGGERED') THEN o.hold_amount
               WHEN o.status IN ('NEW', 'PARTIALLY_FILLED') THEN
                   CASE WHEN o.side = 'BUY' THEN o.price * (o.quantity - o.filled_quantity)
                        ELSE o.quantity - o.filled_quantity END
               ELSE 0
           END AS amount
    FROM orders_order o
    JOIN exchange_market m ON m.id = o.market_id
    LEFT JOIN waiting w ON w.order_id = o.id
)
SELECT e.id, e.status, h.id,
    CASE
        WHEN h.id IS NULL THEN 'it has no hold'
        WHEN h.user_id <> e.user_id OR h.asset_id <> e.asset_id THEN 'its hold is of another user or asset'
        WHEN e.status IN ('FILLED', 'CANCELED', 'EXPIRED', 'REJECTED') THEN 'its hold should be closed'
        ELSE 'it should hold ' || CASE WHEN e.amending THEN 'at least ' ELSE '' END || trim_scale(e.amount)
             || ', its hold is ' || h.status || ' with ' || trim_scale(h.amount_remaining)
    END
FROM expected e
LEFT JOIN wallet_hold h ON h.reference = 'order:' || e.id
WHERE h.id IS NULL
   OR h.user_id <> e.user_id OR h.asset_id <> e.asset_id
   OR (e.status IN ('FILLED', 'CANCELED', 'EXPIRED', 'REJECTED') AND h.status <> 'CLOSED')
   OR (e.status NOT IN ('FILLED', 'CANCELED', 'EXPIRED', 'REJECTED')
       AND (h.status <> 'OPEN'
            OR (NOT e.amending AND h.amount_remaining <> e.amount)
            OR (e.amending AND h.amount_remaining < e.amount)))
ORDER BY 1 LIMIT %s
"""

_ORPHANS_SQL = """
SELECT h.id, h.reference FROM wallet_hold h
WHERE h.reference LIKE 'order:%%'
  AND NOT EXISTS (SELECT 1 FROM orders_order o WHERE 'order:' || o.id = h.reference)
  AND NOT (h.status = 'CLOSED' AND h.closed_at < %s)
ORDER BY 1 LIMIT %s
"""


def order_hold_check(holds) -> list[Violation]:
    from exchange.audit.retention import retention_cutoff

    # No retention: no order may be missing ('-infinity' is before every hold).
    purged_before = retention_cutoff(settings.RETENTION_ORDERS_DAYS) or "-infinity"
    with connection.cursor() as cursor:
        cursor.execute(_MISMATCHED_SQL, [ROW_LIMIT])
        mismatched = cursor.fetchall()
        cursor.execute(_ORPHANS_SQL, [purged_before, ROW_LIMIT])
        orphans = cursor.fetchall()
    return [
        Violation("order_holds", f"order {order_id} ({status}): {problem}",
                  {"orders_order": [order_id], "wallet_hold": [hold_id] if hold_id else []})
        for order_id, status, hold_id, problem in mismatched
    ] + [
        Violation("order_holds", f"hold {hold_id} ({reference}) belongs to no order", {"wallet_hold": [hold_id]})
        for hold_id, reference in orphans
    ]
