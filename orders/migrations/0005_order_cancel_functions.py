"""Cancel requests in one statement each (one round trip).

``orders_order_cancel(user, order, origin...)``: locks the user's order
(another user's is NOT_FOUND), refuses it when it is no longer open
(NOT_OPEN) or its market is halted (MARKET_HALTED), and otherwise flags the
cancel request once, writing ``order.cancel_requested`` and the audit row
``CANCEL_ORDER`` the first time: REQUESTED with the order.

``orders_cancel_all(user, market, symbol, origin...)``: locks the user's open
orders in the market in ascending id order, flags those not flagged yet (one
``order.cancel_requested`` and one ``CANCEL_ORDER`` row each) and returns
how many are open.

The origin arguments say who asked, for the audit row: the API key (null
for a session), the staff member acting for the user (null when the user
acts), the client's address, user agent and request id.

The market's matcher applies the cancels in sequence with matching; the
caller enqueues the stream command after commit.
"""

from django.db import migrations

FORWARD = r"""
CREATE FUNCTION orders_order_cancel(p_user_id integer, p_order_id bigint,
    p_api_key_id bigint, p_staff_id bigint, p_client_ip inet, p_user_agent text, p_request_id varchar,
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
        INSERT INTO exchange_auditlog
            (action, object_type, object_id, market, actor_user_id, actor_api_key_id, actor_staff_id, actor_system,
             subject_user_id, before, after, ip, user_agent, request_id)
        VALUES ('CANCEL_ORDER', 'orders.order', cancelled.id::text, symbol,
                CASE WHEN p_staff_id IS NULL THEN p_user_id END, p_api_key_id, p_staff_id, '', p_user_id,
                jsonb_build_object('status', cancelled.status),
                jsonb_build_object('status', cancelled.status, 'cancel_requested_at', cancelled.cancel_requested_at),
                p_client_ip, p_user_agent, p_request_id);
    END IF;
    outcome := 'REQUESTED';
END
$$;

CREATE FUNCTION orders_cancel_all(p_user_id integer, p_market_id bigint, p_symbol varchar,
    p_api_key_id bigint, p_staff_id bigint, p_client_ip inet, p_user_agent text, p_request_id varchar)
RETURNS integer
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
        RETURNING o.id, o.client_order_id, o.cancel_requested_at, o.status
    ), events AS (
        INSERT INTO exchange_outboxevent (topic, key, event_type, version, payload)
        SELECT 'order.events', p_symbol, 'order.cancel_requested', 1, jsonb_build_object(
            'order_id', f.id, 'client_order_id', f.client_order_id, 'user_id', p_user_id,
            'market', p_symbol, 'requested_at', f.cancel_requested_at)
        FROM flagged f ORDER BY f.id
    ), audited AS (
        INSERT INTO exchange_auditlog
            (action, object_type, object_id, market, actor_user_id, actor_api_key_id, actor_staff_id, actor_system,
             subject_user_id, before, after, ip, user_agent, request_id)
        SELECT 'CANCEL_ORDER', 'orders.order', f.id::text, p_symbol,
               CASE WHEN p_staff_id IS NULL THEN p_user_id END, p_api_key_id, p_staff_id, '', p_user_id,
               jsonb_build_object('status', f.status),
               jsonb_build_object('status', f.status, 'cancel_requested_at', f.cancel_requested_at, 'cancel_all', true),
               p_client_ip, p_user_agent, p_request_id
        FROM flagged f ORDER BY f.id
    )
    SELECT count(*) INTO v_open FROM locked;
    RETURN v_open;
END
$$;
"""

REVERSE = "DROP FUNCTION orders_cancel_all; DROP FUNCTION orders_order_cancel;"


class Migration(migrations.Migration):
    dependencies = [("orders", "0004_order_place_function"), ("exchange", "0007_audit_market_status_applied")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
