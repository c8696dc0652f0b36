"""What the database itself guarantees about the journal, whatever writes to it.

- Transactions and entries are append-only: UPDATE and DELETE are refused.
  Accounts and holds are never deleted either (their cached balances change).
  TRUNCATE, a maintenance operation that needs the table owner, is allowed.
- Every INSERT into the entries is checked once per statement (a trigger with
  a transition table, so a bulk insert costs a few set-based queries instead
  of row-level foreign key checks for every entry):
  * each entry's transaction and account exist and its denormalised asset is
    the account's asset;
  * an entry names a hold exactly when its account is HELD, and that hold is
    of the account's user and asset;
  * every transaction the statement touched sums to zero per asset.

Accounts and holds are updated on every posting; free space in their pages
lets PostgreSQL update them in place (HOT updates, no index maintenance).
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION wallet_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % is refused: %', TG_OP, TG_TABLE_NAME, TG_ARGV[0] USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER wallet_ledgertransaction_append_only
    BEFORE UPDATE OR DELETE ON wallet_ledgertransaction FOR EACH STATEMENT
    EXECUTE FUNCTION wallet_refuse_change('the ledger journal is append-only; post a correcting transaction instead');

CREATE TRIGGER wallet_ledgerentry_append_only
    BEFORE UPDATE OR DELETE ON wallet_ledgerentry FOR EACH STATEMENT
    EXECUTE FUNCTION wallet_refuse_change('the ledger journal is append-only; post a correcting transaction instead');

CREATE TRIGGER wallet_account_kept
    BEFORE DELETE ON wallet_account FOR EACH STATEMENT
    EXECUTE FUNCTION wallet_refuse_change('ledger accounts are never deleted');

CREATE TRIGGER wallet_hold_kept
    BEFORE DELETE ON wallet_hold FOR EACH STATEMENT
    EXECUTE FUNCTION wallet_refuse_change('holds are never deleted');

-- Each lookup is a LATERAL subquery with LIMIT 1 (one index probe per row of
-- the statement), so the check costs the same whatever the size of the ledger.
CREATE FUNCTION wallet_journal_check() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bad record;
BEGIN
    SELECT n.id,
        CASE
            WHEN t.id IS NULL THEN 'its transaction ' || n.transaction_id || ' does not exist'
            WHEN a.id IS NULL THEN 'account ' || n.account_id || ' does not exist'
            WHEN a.asset_id <> n.asset_id THEN 'its asset differs from its account''s'
            WHEN a.kind = 'HELD' AND h.id IS NULL THEN 'an entry on a HELD account must name an existing hold'
            WHEN a.kind <> 'HELD' THEN 'only entries on HELD accounts name a hold'
            ELSE 'its hold ' || h.id || ' belongs to another user or asset than its account'
        END AS problem
    INTO bad
    FROM new_entries n
    LEFT JOIN LATERAL (
        SELECT id FROM wallet_ledgertransaction WHERE id = n.transaction_id LIMIT 1
    ) t ON true
    LEFT JOIN LATERAL (
        SELECT id, user_id, asset_id, kind FROM wallet_account WHERE id = n.account_id LIMIT 1
    ) a ON true
    LEFT JOIN LATERAL (
        SELECT id, user_id, asset_id FROM wallet_hold WHERE id = n.hold_id LIMIT 1
    ) h ON true
    WHERE t.id IS NULL OR a.id IS NULL OR a.asset_id <> n.asset_id
       OR (a.kind = 'HELD') <> (n.hold_id IS NOT NULL)
       OR (n.hold_id IS NOT NULL AND (h.id IS NULL OR h.user_id <> a.user_id OR h.asset_id <> a.asset_id))
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'ledger entry %: %', bad.id, bad.problem USING ERRCODE = 'foreign_key_violation';
    END IF;

    SELECT t.transaction_id, s.asset_id, s.total INTO bad
    FROM (SELECT DISTINCT transaction_id FROM new_entries) t
    CROSS JOIN LATERAL (
        SELECT e.asset_id, sum(e.amount) AS total FROM wallet_ledgerentry e
        WHERE e.transaction_id = t.transaction_id
        GROUP BY e.asset_id
    ) s
    WHERE s.total <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal transaction % does not balance: asset % sums to %',
            bad.transaction_id, bad.asset_id, bad.total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER wallet_ledgerentry_checked
    AFTER INSERT ON wallet_ledgerentry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_journal_check();

ALTER TABLE wallet_account SET (fillfactor = 50);
ALTER TABLE wallet_hold SET (fillfactor = 70);
"""

REVERSE = """
ALTER TABLE wallet_hold RESET (fillfactor);
ALTER TABLE wallet_account RESET (fillfactor);
DROP TRIGGER wallet_ledgerentry_checked ON wallet_ledgerentry;
DROP FUNCTION wallet_journal_check();
DROP TRIGGER wallet_hold_kept ON wallet_hold;
DROP TRIGGER wallet_account_kept ON wallet_account;
DROP TRIGGER wallet_ledgerentry_append_only ON wallet_ledgerentry;
DROP TRIGGER wallet_ledgertransaction_append_only ON wallet_ledgertransaction;
DROP FUNCTION wallet_refuse_change();
"""


class Migration(migrations.Migration):
    dependencies = [("wallet", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
