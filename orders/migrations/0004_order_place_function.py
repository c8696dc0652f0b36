"""``orders_order_place()``: accepting an order in one statement (one round trip).

The API validates an order in Python (``orders.rules``), then calls this
function, which in the caller's transaction (a transaction of its own when
called in autocommit):

1. locks the user's AVAILABLE and HELD accounts of the held asset, in
   ascending id order (creating the HELD account first when missing, before
   any lock, as ``wallet.ledger.Posting`` does), and returns
   ``INSUFFICIENT_FUNDS`` with the available balance, writing nothing, when
   they do not cover the hold (or, when the client_order_id was used
   before, the order placed with it: a retry of an accepted order gets that
   order back even once its funds are spent);
2. inserts the order as PENDING; when ``(user, client_order_id)`` exists
   (``ON CONFLICT``: also when a concurrent request with the same id committed
   first), returns ``EXISTING`` with that order and writes nothing;
3. places the order's hold exactly as ``Posting`` would for a
   ``HoldPlace("order:<id>")``: the hold row, a HOLD journal transaction with
   its two entries (AVAILABLE -amount, HELD +amount naming the hold; the
   journal trigger checks them), both cached balances updated;
4. writes the outbox events ``order.accepted`` and ``balance.changed`` (the
   same payloads as the Python emitters, docs/EVENTS.md) and the audit row
   ``PLACE_ORDER`` (docs/AUDIT.md, "From SQL"): who placed it (the user, the
   API key), from where (address, user agent, request id), and its terms;
5. returns ``ACCEPTED`` with the order row and the new balances.

Amounts must already be whole numbers of the held asset's units (the rules
guarantee it); anything else raises, as the ledger does. The caller maps the
outcome to the API's answer; nothing here decides what an order may be.
"""

from django.db import migrations

FORWARD = r"""
CREATE FUNCTION orders_order_place(
    p_user_id integer, p_market_id bigint, p_symbol varchar, p_client_order_id varchar,
    p_side varchar, p_type varchar, p_time_in_force varchar, p_price numeric, p_stop_price numeric,
    p_quantity numeric, p_quote_quantity numeric, p_stp_mode varchar,
    p_hold_asset_id bigint, p_hold_amount numeric, p_maker_fee_rate numeric, p_taker_fee_rate numeric,
    p_client_ip inet, p_api_key_id bigint, p_memo text, p_user_agent text, p_request_id varchar,
    OUT outcome text, OUT placed orders_order, OUT available numeric, OUT held numeric, OUT asset_code varchar)
LANGUAGE plpgsql AS $$
DECLARE
    v_precision integer;
    v_available_id bigint;
    v_held_id bigint;
    v_hold_id bigint;
    v_transaction_id bigint;
    v_reference varchar;
BEGIN
    SELECT a.code, a.precision INTO asset_code, v_precision FROM exchange_asset a WHERE a.id = p_hold_asset_id;
    IF p_hold_amount IS NULL OR p_hold_amount <= 0 OR p_hold_amount <> round(p_hold_amount, v_precision) THEN
        RAISE EXCEPTION 'order hold % is not a positive whole number of % units', p_hold_amount, asset_code
            USING ERRCODE = 'check_violation';
    END IF;

    -- 1. The accounts, HELD created first if missing; both locked in id order.
    IF NOT EXISTS (SELECT 1 FROM wallet_account
                   WHERE user_id = p_user_id AND asset_id = p_hold_asset_id AND kind = 'HELD') THEN
        INSERT INTO wallet_account (user_id, asset_id, kind, balance)
        VALUES (p_user_id, p_hold_asset_id, 'HELD', 0) ON CONFLICT DO NOTHING;
    END IF;
    SELECT max(a.id) FILTER (WHERE a.kind = 'AVAILABLE'), max(a.id) FILTER (WHERE a.kind = 'HELD'),
           coalesce(sum(a.balance) FILTER (WHERE a.kind = 'AVAILABLE'), 0),
           coalesce(sum(a.balance) FILTER (WHERE a.kind = 'HELD'), 0)
    INTO v_available_id, v_held_id, available, held
    FROM (SELECT id, kind, balance FROM wallet_account
          WHERE user_id = p_user_id AND asset_id = p_hold_asset_id AND kind IN ('AVAILABLE', 'HELD')
          ORDER BY id FOR UPDATE) a;
    IF available < p_hold_amount THEN
        SELECT o.* INTO placed FROM orders_order o
        WHERE o.user_id = p_user_id AND o.client_order_id = p_client_order_id;
        outcome := CASE WHEN placed.id IS NULL THEN 'INSUFFICIENT_FUNDS' ELSE 'EXISTING' END;
        RETURN;
    END IF;

    -- 2. The order, unless its client_order_id exists.
    INSERT INTO orders_order (
        user_id, market_id, client_order_id, side, type, time_in_force, price, stop_price, quantity,
        quote_quantity, stp_mode, hold_amount, maker_fee_rate, taker_fee_rate, status, status_reason,
        filled_quantity, filled_notional, fee_total, client_ip, api_key_id, created_at, updated_at)
    VALUES (
        p_user_id, p_market_id, p_client_order_id, p_side, p_type, p_time_in_force, p_price, p_stop_price,
        p_quantity, p_quote_quantity, p_stp_mode, p_hold_amount, p_maker_fee_rate, p_taker_fee_rate,
        'PENDING', '', 0, 0, 0, p_client_ip, p_api_key_id, now(), now())
    ON CONFLICT (user_id, client_order_id) DO NOTHING
    RETURNING * INTO placed;
    IF placed.id IS NULL THEN
        SELECT o.* INTO placed FROM orders_order o
        WHERE o.user_id = p_user_id AND o.client_order_id = p_client_order_id;
        outcome := 'EXISTING';
        RETURN;
    END IF;

    -- 3. The hold: AVAILABLE -> HELD under "order:<id>", one HOLD journal transaction.
    v_reference := 'order:' || placed.id;
    INSERT INTO wallet_hold (reference, user_id, asset_id, amount, amount_remaining, status)
    VALUES (v_reference, p_user_id, p_hold_asset_id, p_hold_amount, p_hold_amount, 'OPEN')
    RETURNING id INTO v_hold_id;
    INSERT INTO wallet_ledgertransaction (kind, reference, memo, actor_id)
    VALUES ('HOLD', v_reference, p_memo, NULL)
    RETURNING id INTO v_transaction_id;
    INSERT INTO wallet_ledgerentry (transaction_id, account_id, asset_id, amount, hold_id)
    VALUES (v_transaction_id, v_available_id, p_hold_asset_id, -p_hold_amount, NULL),
           (v_transaction_id, v_held_id, p_hold_asset_id, p_hold_amount, v_hold_id);
    UPDATE wallet_account SET balance = balance + CASE WHEN kind = 'HELD' THEN p_hold_amount ELSE -p_hold_amount END,
                              updated_at = statement_timestamp()
    WHERE id IN (v_available_id, v_held_id);
    available := available - p_hold_amount;
    held := held + p_hold_amount;

    -- 4. Its events.
    INSERT INTO exchange_outboxevent (topic, key, event_type, version, payload)
    VALUES
        ('order.events', p_symbol, 'order.accepted', 1, jsonb_build_object(
            'order_id', placed.id, 'client_order_id', placed.client_order_id, 'user_id', p_user_id,
            'market', p_symbol, 'side', placed.side, 'type', placed.type, 'time_in_force', placed.time_in_force,
            'price', trim_scale(placed.price)::text, 'stop_price', trim_scale(placed.stop_price)::text,
            'quantity', trim_scale(placed.quantity)::text, 'quote_quantity', trim_scale(placed.quote_quantity)::text,
            'stp_mode', placed.stp_mode, 'hold_amount', trim_scale(placed.hold_amount)::text,
            'maker_fee_rate', trim_scale(placed.maker_fee_rate)::text,
            'taker_fee_rate', trim_scale(placed.taker_fee_rate)::text,
            'status', placed.status, 'created_at', placed.created_at)),
        ('balance.events', p_user_id::text, 'balance.changed', 1, jsonb_build_object(
            'user_id', p_user_id, 'asset', asset_code,
            'available', trim_scale(available)::text, 'held', trim_scale(held)::text));
    INSERT INTO exchange_auditlog
        (action, object_type, object_id, market, actor_user_id, actor_api_key_id, actor_staff_id, actor_system,
         subject_user_id, before, after, ip, user_agent, request_id)
    VALUES ('PLACE_ORDER', 'orders.order', placed.id::text, p_symbol, p_user_id, p_api_key_id, NULL, '',
            p_user_id, NULL, jsonb_build_object(
                'client_order_id', placed.client_order_id, 'side', placed.side, 'type', placed.type,
                'time_in_force', placed.time_in_force, 'price', trim_scale(placed.price)::text,
                'stop_price', trim_scale(placed.stop_price)::text, 'quantity', trim_scale(placed.quantity)::text,
                'quote_quantity', trim_scale(placed.quote_quantity)::text, 'stp_mode', placed.stp_mode,
                'hold_amount', trim_scale(placed.hold_amount)::text, 'status', placed.status),
            p_client_ip, p_user_agent, p_request_id);
    outcome := 'ACCEPTED';
END
$$;
"""

REVERSE = "DROP FUNCTION orders_order_place;"


class Migration(migrations.Migration):
    dependencies = [
        ("orders", "0003_order_origin"),
        ("wallet", "0002_journal_integrity"),
        ("exchange", "0007_audit_market_status_applied"),
    ]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
