"""``orders_order_place_many()``: several placements in one statement, one transaction.

The fast order path (``orders.fastpath``) gathers the placements that arrive
while its earlier ones are in the database and sends them together, so that
a busy web worker pays one round trip and one commit (one WAL flush) for
many orders instead of one each.

Each order is placed by ``orders_order_place()`` (migration 0004), one after
the other in the order given, so that the result is exactly that of placing
them one by one: the same checks, the same rows, each order seeing the
balances the earlier ones left. Before the first, every account any of them
will lock is created if missing and locked, in ascending id order: the
transaction then takes its row locks in the platform's order (accounts by
ascending id) however the orders' users interleave, and cannot deadlock
with a matcher's batch or another placement.

Arguments are arrays, one element per order, in ``orders_order_place()``'s
order; the result is one row per order, in the order given, with its
ordinal (1-based).
"""

from django.db import migrations

FORWARD = r"""
CREATE FUNCTION orders_order_place_many(
    p_user_id integer[], p_market_id bigint[], p_symbol varchar[], p_client_order_id varchar[],
    p_side varchar[], p_type varchar[], p_time_in_force varchar[], p_price numeric[], p_stop_price numeric[],
    p_quantity numeric[], p_quote_quantity numeric[], p_stp_mode varchar[],
    p_hold_asset_id bigint[], p_hold_amount numeric[], p_maker_fee_rate numeric[], p_taker_fee_rate numeric[],
    p_client_ip inet[], p_api_key_id bigint[], p_memo text[], p_user_agent text[], p_request_id varchar[])
RETURNS TABLE (ordinal bigint, outcome text, placed orders_order, available numeric, held numeric,
               asset_code varchar)
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO wallet_account (user_id, asset_id, kind, balance)
    SELECT DISTINCT k.user_id, k.asset_id, 'HELD', 0
    FROM unnest(p_user_id, p_hold_asset_id) AS k(user_id, asset_id)
    WHERE NOT EXISTS (SELECT 1 FROM wallet_account a
                      WHERE a.user_id = k.user_id AND a.asset_id = k.asset_id AND a.kind = 'HELD')
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM wallet_account a
    WHERE (a.user_id, a.asset_id) IN (SELECT * FROM unnest(p_user_id, p_hold_asset_id))
      AND a.kind IN ('AVAILABLE', 'HELD')
    ORDER BY a.id FOR UPDATE;
    RETURN QUERY
        SELECT p.n, r.outcome, r.placed, r.available, r.held, r.asset_code
        FROM unnest(p_user_id, p_market_id, p_symbol, p_client_order_id, p_side, p_type, p_time_in_force,
                    p_price, p_stop_price, p_quantity, p_quote_quantity, p_stp_mode, p_hold_asset_id,
                    p_hold_amount, p_maker_fee_rate, p_taker_fee_rate, p_client_ip, p_api_key_id, p_memo,
                    p_user_agent, p_request_id)
            WITH ORDINALITY AS p(user_id, market_id, symbol, client_order_id, side, type, time_in_force, price,
                                 stop_price, quantity, quote_quantity, stp_mode, hold_asset_id, hold_amount,
                                 maker_fee_rate, taker_fee_rate, client_ip, api_key_id, memo, user_agent,
                                 request_id, n)
        CROSS JOIN LATERAL orders_order_place(
            p.user_id, p.market_id, p.symbol, p.client_order_id, p.side, p.type, p.time_in_force, p.price,
            p.stop_price, p.quantity, p.quote_quantity, p.stp_mode, p.hold_asset_id, p.hold_amount,
            p.maker_fee_rate, p.taker_fee_rate, p.client_ip, p.api_key_id, p.memo, p.user_agent, p.request_id) r
        ORDER BY p.n;
END
$$;
"""

REVERSE = "DROP FUNCTION orders_order_place_many;"


class Migration(migrations.Migration):
    dependencies = [("orders", "0005_order_cancel_functions")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
