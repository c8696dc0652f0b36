"""The matchers' market status changes land in the audit trail, written by the database.

A market's status changes only in its matcher, which marks the operator's
``MarketStatusChange`` request APPLIED or REJECTED in the transaction of the
batch that sequenced it. This trigger writes the audit row
(MARKET_STATUS_APPLIED / MARKET_STATUS_REJECTED, actor "matcher:<symbol>")
in that same transaction, so the trail has the change exactly when it
committed, whatever code the matcher runs. One INSERT per status change,
nothing on any other update.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION exchange_audit_market_status_applied() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    symbol text := (SELECT m.symbol FROM exchange_market m WHERE m.id = NEW.market_id);
    applied boolean := NEW.status = 'APPLIED';
BEGIN
    INSERT INTO exchange_auditlog (action, object_type, object_id, market, actor_system, before, after)
    VALUES (
        CASE WHEN applied THEN 'MARKET_STATUS_APPLIED' ELSE 'MARKET_STATUS_REJECTED' END,
        'matching.marketstatuschange', NEW.id::text, symbol, left('matcher:' || symbol, 64),
        jsonb_build_object('status', NULLIF(NEW.previous_status, '')),
        jsonb_build_object(
            'status', CASE WHEN applied THEN NEW.new_status ELSE NULLIF(NEW.previous_status, '') END,
            'outcome', NEW.status, 'requested_status', NEW.new_status, 'sequence', NEW.sequence,
            'requested_by', NEW.requested_by_id));
    RETURN NULL;
END
$$;

CREATE TRIGGER exchange_audit_market_status_applied
    AFTER UPDATE OF status ON matching_marketstatuschange
    FOR EACH ROW WHEN (OLD.status = 'REQUESTED' AND NEW.status <> 'REQUESTED')
    EXECUTE FUNCTION exchange_audit_market_status_applied();
"""

REVERSE = """
DROP TRIGGER exchange_audit_market_status_applied ON matching_marketstatuschange;
DROP FUNCTION exchange_audit_market_status_applied();
"""


class Migration(migrations.Migration):
    dependencies = [("exchange", "0006_audit_trail"), ("matching", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
