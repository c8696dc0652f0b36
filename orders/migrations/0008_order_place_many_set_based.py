"""``orders_order_place_many()`` placing a batch with one statement per table, not per order.

The version of migration 0006 called ``orders_order_place()`` once per order:
about a dozen statements each, every one paying the executor's set-up, the
parsing of its table's CHECK constraints and, for the journal, the
statement trigger; and its own statements, whose cost depends on the
arrays' lengths, were planned anew at every call (a custom plan is always
cheaper than a generic one that assumes 100 elements). Measured on one
connection (docs/BENCHMARKS.md, "Placements in one statement per table"),
a batch of four cost nearly as much PostgreSQL CPU per order as four lone
``orders_order_place()`` calls; now it costs about 40% less.

This version gives each order exactly the outcome, rows, events and audit
row that placing the orders one by one, in the order given, would give
(``tests/orders/test_place_many.py`` compares them on random batches):

1. the HELD accounts are created if missing, then all the accounts the
   batch touches are locked in ascending id order (the platform's lock
   order: no deadlock with a matcher's batch or another placement) and
   their balances read;
2. every hold amount is checked as ``orders_order_place()`` checks it (a
   positive whole number of the asset's units; anything else raises), and
   whether each client_order_id was used before is read;
3. the outcomes are decided in order, in memory: an order whose
   client_order_id exists (placed earlier, or accepted earlier in this
   batch) is EXISTING; one whose hold the balance left by the orders before
   it does not cover is INSUFFICIENT_FUNDS; the rest are ACCEPTED and take
   their hold from that balance;
4. one statement writes the accepted orders, their holds, their HOLD
   journal transactions and entries (the journal trigger checks them all at
   once), the accounts' new balances, the events (``order.accepted`` and
   ``balance.changed`` with the balances after each order, in the order of
   the orders) and the ``PLACE_ORDER`` audit rows. A client_order_id taken
   by a concurrent transaction meanwhile (the insert skips it) makes it
   raise, writing nothing: the caller places that batch's orders one by one
   (``orders.batching``);
5. the result: one row per order, in the order given, with its ordinal.

The function plans its statements once per connection (``plan_cache_mode``
set on it): they are written so that the generic plans probe the indexes
per element whatever the arrays' lengths.
"""

from importlib import import_module

from django.db import migrations

FORWARD = r"""
CREATE OR REPLACE FUNCTION orders_order_place_many(
    p_user_id integer[], p_market_id bigint[], p_symbol varchar[], p_client_order_id varchar[],
    p_side varchar[], p_type varchar[], p_time_in_force varchar[], p_price numeric[], p_stop_price numeric[],
    p_quantity numeric[], p_quote_quantity numeric[], p_stp_mode varchar[],
    p_hold_asset_id bigint[], p_hold_amount numeric[], p_maker_fee_rate numeric[], p_taker_fee_rate numeric[],
    p_client_ip inet[], p_api_key_id bigint[], p_memo text[], p_user_agent text[], p_request_id varchar[])
RETURNS TABLE (ordinal bigint, outcome text, placed orders_order, available numeric, held numeric,
               asset_code varchar)
LANGUAGE plpgsql
SET plan_cache_mode = force_generic_plan
AS $$
DECLARE
    v_count integer := cardinality(p_user_id);
    v_code varchar[];            -- per order: the held asset's code
    v_bad bigint;                -- the first order whose hold amount is not a whole number of units
    v_pairs text[];              -- "user:asset" of the orders' held assets
    v_available numeric[];       -- per pair: the balances as the orders so far left them
    v_held numeric[];
    v_exists boolean[];          -- per order: its client_order_id was used before this batch
    v_taken text[] := '{}';      -- "user:client_order_id" of the orders accepted so far
    v_outcome text[];            -- per order: ACCEPTED, EXISTING or INSUFFICIENT_FUNDS
    v_after_available numeric[]; -- per order: the balances after it (as orders_order_place returns them)
    v_after_held numeric[];
    v_key text;
    v_slot integer;              -- the order's pair
    v_accepted integer := 0;
    v_written integer;
BEGIN
    IF v_count IS NULL THEN
        RETURN;
    END IF;

    -- 1. The accounts: HELD created if missing; all locked in id order, and the balances of
    --    each (user, asset) read ("user:asset" in v_pairs).
    INSERT INTO wallet_account (user_id, asset_id, kind, balance)
    SELECT DISTINCT k.user_id, k.asset_id, 'HELD', 0
    FROM unnest(p_user_id, p_hold_asset_id) AS k(user_id, asset_id)
    WHERE NOT EXISTS (SELECT 1 FROM wallet_account a
                      WHERE a.user_id = k.user_id AND a.asset_id = k.asset_id AND a.kind = 'HELD')
    ORDER BY 1, 2
    ON CONFLICT DO NOTHING;
    SELECT array_agg(b.pair ORDER BY b.pair), array_agg(b.available ORDER BY b.pair),
           array_agg(b.held ORDER BY b.pair)
    INTO v_pairs, v_available, v_held
    FROM (SELECT l.user_id || ':' || l.asset_id AS pair,
                 coalesce(sum(l.balance) FILTER (WHERE l.kind = 'AVAILABLE'), 0) AS available,
                 coalesce(sum(l.balance) FILTER (WHERE l.kind = 'HELD'), 0) AS held
          FROM (SELECT a.user_id, a.asset_id, a.kind, a.balance FROM wallet_account a
                WHERE a.id = ANY (ARRAY(
                    SELECT x.id
                    FROM (SELECT DISTINCT k.user_id, k.asset_id
                          FROM unnest(p_user_id, p_hold_asset_id) AS k(user_id, asset_id)) k
                    CROSS JOIN LATERAL (
                        SELECT y.id FROM wallet_account y
                        WHERE y.user_id = k.user_id AND y.asset_id = k.asset_id AND y.kind IN ('AVAILABLE', 'HELD')
                        LIMIT 2) x))
                ORDER BY a.id FOR UPDATE) l
          GROUP BY l.user_id, l.asset_id) b;

    -- 2. Per order: the held asset's code, whether the hold is a whole number of its units
    --    (as orders_order_place checks it), whether its client_order_id was used before.
    SELECT array_agg(a.code ORDER BY k.n),
           min(k.n) FILTER (WHERE k.amount IS NULL OR k.amount <= 0 OR k.amount <> round(k.amount, a.precision)),
           array_agg(EXISTS (SELECT 1 FROM orders_order o WHERE o.user_id = k.user_id
                                                            AND o.client_order_id = k.client_order_id)
                     ORDER BY k.n)
    INTO v_code, v_bad, v_exists
    FROM unnest(p_user_id, p_client_order_id, p_hold_asset_id, p_hold_amount)
        WITH ORDINALITY AS k(user_id, client_order_id, asset_id, amount, n)
    LEFT JOIN LATERAL (SELECT x.code, x.precision FROM exchange_asset x WHERE x.id = k.asset_id LIMIT 1) a ON true;
    IF v_bad IS NOT NULL THEN
        RAISE EXCEPTION 'order hold % is not a positive whole number of % units', p_hold_amount[v_bad], v_code[v_bad]
            USING ERRCODE = 'check_violation';
    END IF;

    -- 3. The outcomes, in order.
    v_outcome := array_fill(NULL::text, ARRAY[v_count]);
    v_after_available := array_fill(NULL::numeric, ARRAY[v_count]);
    v_after_held := array_fill(NULL::numeric, ARRAY[v_count]);
    FOR i IN 1 .. v_count LOOP
        v_key := p_user_id[i] || ':' || p_client_order_id[i];
        v_slot := array_position(v_pairs, p_user_id[i] || ':' || p_hold_asset_id[i]);
        IF v_exists[i] OR v_key = ANY (v_taken) THEN
            v_outcome[i] := 'EXISTING';
        ELSIF v_available[v_slot] < p_hold_amount[i] THEN
            v_outcome[i] := 'INSUFFICIENT_FUNDS';
        ELSE
            v_outcome[i] := 'ACCEPTED';
            v_available[v_slot] := v_available[v_slot] - p_hold_amount[i];
            v_held[v_slot] := v_held[v_slot] + p_hold_amount[i];
            v_taken := v_taken || v_key;
            v_accepted := v_accepted + 1;
        END IF;
        v_after_available[i] := v_available[v_slot];
        v_after_held[i] := v_held[v_slot];
    END LOOP;

    -- 4. What the accepted orders write.
    IF v_accepted > 0 THEN
        WITH p AS MATERIALIZED (
            SELECT *
            FROM unnest(p_user_id, p_market_id, p_symbol, p_client_order_id, p_side, p_type, p_time_in_force,
                        p_price, p_stop_price, p_quantity, p_quote_quantity, p_stp_mode, p_hold_asset_id,
                        p_hold_amount, p_maker_fee_rate, p_taker_fee_rate, p_client_ip, p_api_key_id, p_memo,
                        p_user_agent, p_request_id)
                WITH ORDINALITY AS p(user_id, market_id, symbol, client_order_id, side, type, time_in_force, price,
                                     stop_price, quantity, quote_quantity, stp_mode, hold_asset_id, hold_amount,
                                     maker_fee_rate, taker_fee_rate, client_ip, api_key_id, memo, user_agent,
                                     request_id, n)
            WHERE v_outcome[p.n] = 'ACCEPTED'),
        inserted AS (
            INSERT INTO orders_order (
                user_id, market_id, client_order_id, side, type, time_in_force, price, stop_price, quantity,
                quote_quantity, stp_mode, hold_amount, maker_fee_rate, taker_fee_rate, status, status_reason,
                filled_quantity, filled_notional, fee_total, client_ip, api_key_id, created_at, updated_at)
            SELECT p.user_id, p.market_id, p.client_order_id, p.side, p.type, p.time_in_force, p.price, p.stop_price,
                   p.quantity, p.quote_quantity, p.stp_mode, p.hold_amount, p.maker_fee_rate, p.taker_fee_rate,
                   'PENDING', '', 0, 0, 0, p.client_ip, p.api_key_id, now(), now()
            FROM p ORDER BY p.n
            ON CONFLICT (user_id, client_order_id) DO NOTHING
            RETURNING *),
        o AS MATERIALIZED (
            SELECT p.n, p.symbol, p.hold_asset_id, p.memo, p.user_agent, p.request_id, 'order:' || i.id AS reference,
                   i AS placed
            FROM p JOIN inserted i ON i.user_id = p.user_id AND i.client_order_id = p.client_order_id),
        accounts AS MATERIALIZED (
            SELECT o.n, a.id, a.kind, (o.placed).hold_amount * CASE WHEN a.kind = 'HELD' THEN 1 ELSE -1 END AS amount
            FROM o CROSS JOIN LATERAL (
                SELECT y.id, y.kind FROM wallet_account y
                WHERE y.user_id = (o.placed).user_id AND y.asset_id = o.hold_asset_id
                  AND y.kind IN ('AVAILABLE', 'HELD')
                LIMIT 2) a),
        holds AS (
            INSERT INTO wallet_hold (reference, user_id, asset_id, amount, amount_remaining, status)
            SELECT o.reference, (o.placed).user_id, o.hold_asset_id, (o.placed).hold_amount,
                   (o.placed).hold_amount, 'OPEN'
            FROM o ORDER BY o.n
            RETURNING id, reference),
        transactions AS (
            INSERT INTO wallet_ledgertransaction (kind, reference, memo, actor_id)
            SELECT 'HOLD', o.reference, o.memo, NULL FROM o ORDER BY o.n
            RETURNING id, reference),
        entries AS (
            INSERT INTO wallet_ledgerentry (transaction_id, account_id, asset_id, amount, hold_id)
            SELECT t.id, a.id, o.hold_asset_id, a.amount, CASE WHEN a.kind = 'HELD' THEN h.id END
            FROM o
            JOIN transactions t ON t.reference = o.reference
            JOIN holds h ON h.reference = o.reference
            JOIN accounts a ON a.n = o.n
            ORDER BY o.n, a.kind = 'HELD'),
        balances AS (
            UPDATE wallet_account w SET balance = w.balance + d.amount, updated_at = statement_timestamp()
            FROM (SELECT a.id, sum(a.amount) AS amount FROM accounts a GROUP BY a.id) d
            WHERE w.id = d.id),
        events AS (
            INSERT INTO exchange_outboxevent (topic, key, event_type, version, payload)
            SELECT e.topic, e.key, e.event_type, 1, e.payload
            FROM o CROSS JOIN LATERAL (VALUES
                (1, 'order.events', o.symbol::text, 'order.accepted', jsonb_build_object(
                    'order_id', (o.placed).id, 'client_order_id', (o.placed).client_order_id,
                    'user_id', (o.placed).user_id, 'market', o.symbol, 'side', (o.placed).side,
                    'type', (o.placed).type, 'time_in_force', (o.placed).time_in_force,
                    'price', trim_scale((o.placed).price)::text, 'stop_price', trim_scale((o.placed).stop_price)::text,
                    'quantity', trim_scale((o.placed).quantity)::text,
                    'quote_quantity', trim_scale((o.placed).quote_quantity)::text,
                    'stp_mode', (o.placed).stp_mode, 'hold_amount', trim_scale((o.placed).hold_amount)::text,
                    'maker_fee_rate', trim_scale((o.placed).maker_fee_rate)::text,
                    'taker_fee_rate', trim_scale((o.placed).taker_fee_rate)::text,
                    'status', (o.placed).status, 'created_at', (o.placed).created_at)),
                (2, 'balance.events', (o.placed).user_id::text, 'balance.changed', jsonb_build_object(
                    'user_id', (o.placed).user_id, 'asset', v_code[o.n],
                    'available', trim_scale(v_after_available[o.n])::text,
                    'held', trim_scale(v_after_held[o.n])::text))
            ) AS e(position, topic, key, event_type, payload)
            ORDER BY o.n, e.position)
        INSERT INTO exchange_auditlog
            (action, object_type, object_id, market, actor_user_id, actor_api_key_id, actor_staff_id, actor_system,
             subject_user_id, before, after, ip, user_agent, request_id)
        SELECT 'PLACE_ORDER', 'orders.order', (o.placed).id::text, o.symbol, (o.placed).user_id,
               (o.placed).api_key_id, NULL, '', (o.placed).user_id, NULL, jsonb_build_object(
                   'client_order_id', (o.placed).client_order_id, 'side', (o.placed).side, 'type', (o.placed).type,
                   'time_in_force', (o.placed).time_in_force, 'price', trim_scale((o.placed).price)::text,
                   'stop_price', trim_scale((o.placed).stop_price)::text,
                   'quantity', trim_scale((o.placed).quantity)::text,
                   'quote_quantity', trim_scale((o.placed).quote_quantity)::text, 'stp_mode', (o.placed).stp_mode,
                   'hold_amount', trim_scale((o.placed).hold_amount)::text, 'status', (o.placed).status),
               (o.placed).client_ip, o.user_agent, o.request_id
        FROM o ORDER BY o.n;
        GET DIAGNOSTICS v_written = ROW_COUNT;
        IF v_written <> v_accepted THEN
            RAISE EXCEPTION 'a client_order_id of this batch was taken by a concurrent placement'
                USING ERRCODE = 'serialization_failure';
        END IF;
    END IF;

    -- 5. One row per order.
    RETURN QUERY
        SELECT k.n, v_outcome[k.n], x.placed, v_after_available[k.n], v_after_held[k.n], v_code[k.n]
        FROM unnest(p_user_id, p_client_order_id) WITH ORDINALITY AS k(user_id, client_order_id, n)
        LEFT JOIN LATERAL (
            SELECT o AS placed FROM orders_order o
            WHERE v_outcome[k.n] <> 'INSUFFICIENT_FUNDS' AND o.user_id = k.user_id
              AND o.client_order_id = k.client_order_id
            LIMIT 1) x ON true
        ORDER BY k.n;
END
$$;
"""


def _previous() -> str:
    source = import_module("orders.migrations.0006_order_place_many_function").FORWARD
    return source.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)


class Migration(migrations.Migration):
    dependencies = [("orders", "0007_matcher_write_path")]

    operations = [migrations.RunSQL(FORWARD, _previous())]
