"""Cancel requests in one statement each (one round trip).

``orders_order_cancel(user, order)``: locks the user's order (another user's
is NOT_FOUND), refuses it when it is no longer open (NOT_OPEN) or its market
is halted (MARKET_HALTED), and otherwise flags the cancel request once,
writing ``order.cancel_requested`` the first time: REQUESTED with the order.

``orders_cancel_all(user, market)``: locks the user's open orders in the
market in ascending id order, flags those not flagged yet (one
``order.cancel_requested`` each) and returns how many are open.

The market's matcher applies the cancels in sequence with matching; the
caller enqueues the stream command after commit.
"""

from django.db import migrations

FORWARD = r"""
CREATE FUNCTION orders_order_cancel(p_user_id integer, p_order_id bigint,
    OUT outcome text, OUT cancelled orders_order, OUT symbol varchar)
LANGUAGE plpgsql AS $$
DECLARE
    v_market_status varchar;
BEGIN
    SELECT o.* INTO cancelled FROM orders_order o WHERE o.id = p_order_id AND o.user_id = p_user_id FOR UPDATE;
    IF cancelled.id IS NULL THEN
        outcome := 'NOT_FOUND';
        RETURN;
    END IF;
    IF cancelled.status NOT IN ('PENDING', 'UNTRIGGERED', 'NEW', 'PARTIALLY_FILLED') THEN
        outcome := 'NOT_OPEN';
        RETURN;
    END IF;
    SELECT m.symbol, m.status INTO symbol, v_market_status FROM exchange_market m WHERE m.id = cancelled.market_id;
    IF v_market_status = 'HALTED' THEN
        outcome := 'MARKET_HALTED';
        RETURN;
    END IF;
    IF cancelled.cancel_requested_at IS NULL THEN
        UPDATE orders_order o SET cancel_requested_at = now(), updated_at = now()
        WHERE o.id = p_order_id RETURNING o.* INTO cancelled;
        INSERT INTO exchange_outboxevent (topic, key, event_type, version, payload)
        VALUES ('order.events', symbol, 'order.cancel_requested', 1, jsonb_build_object(
            'order_id', cancelled.id, 'client_order_id', cancelled.client_order_id, 'user_id', p_user_id,
            'market', symbol, 'requested_at', cancelled.cancel_requested_at));
    END IF;
    outcome := 'REQUESTED';
END
$$;

CREATE FUNCTION orders_cancel_all(p_user_id integer, p_market_id bigint, p_symbol varchar) RETURNS integer
LANGUAGE plpgsql AS $$
DECLARE
    v_open integer;
BEGIN
    WITH locked AS (
        SELECT o.id, o.client_order_id, o.cancel_requested_at FROM orders_order o
        WHERE o.user_id = p_user_id AND o.market_id = p_market_id
          AND o.status IN ('PENDING', 'UNTRIGGERED', 'NEW', 'PARTIALLY_FILLED')
        ORDER BY o.id FOR UPDATE
    ), flagged AS (
        UPDATE orders_order o SET cancel_requested_at = now(), updated_at = now()
        FROM locked l WHERE o.id = l.id AND l.cancel_requested_at IS NULL
        RETURNING o.id, o.client_order_id, o.cancel_requested_at
    ), events AS (
        INSERT INTO exchange_outboxevent (topic, key, event_type, version, payload)
        SELECT 'order.events', p_symbol, 'order.cancel_requested', 1, jsonb_build_object(
            'order_id', f.id, 'client_order_id', f.client_order_id, 'user_id', p_user_id,
            'market', p_symbol, 'requested_at', f.cancel_requested_at)
        FROM flagged f ORDER BY f.id
    )
    SELECT count(*) INTO v_open FROM locked;
    RETURN v_open;
END
$$;
"""

REVERSE = "DROP FUNCTION orders_cancel_all; DROP FUNCTION orders_order_cancel;"


class Migration(migrations.Migration):
    dependencies = [("orders", "0004_order_place_function")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
