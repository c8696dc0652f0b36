"""What the database itself guarantees about the journal, whatever writes to it.

- Transactions and entries are append-only: UPDATE and DELETE are refused
  (TRUNCATE, a maintenance operation that needs the table owner, is not).
- Every INSERT into the entries is checked, once per statement, for the
  transactions it touches: their entries must sum to zero per asset. A
  statement-level trigger with a transition table costs one aggregate per
  INSERT, so bulk posting stays cheap.
- An entry's denormalised asset is its account's asset (a composite
  foreign key), so the per-asset check above cannot be fooled.
"""

from django.db import migrations

FORWARD = """
CREATE FUNCTION wallet_journal_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger journal is append-only: % on % is refused; post a correcting transaction instead',
        TG_OP, TG_TABLE_NAME USING ERRCODE = 'restrict_violation';
END
$$;

CREATE TRIGGER wallet_ledgertransaction_append_only
    BEFORE UPDATE OR DELETE ON wallet_ledgertransaction
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_journal_append_only();

CREATE TRIGGER wallet_ledgerentry_append_only
    BEFORE UPDATE OR DELETE ON wallet_ledgerentry
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_journal_append_only();

CREATE FUNCTION wallet_journal_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    unbalanced record;
BEGIN
    SELECT e.transaction_id, e.asset_id, sum(e.amount) AS total INTO unbalanced
    FROM wallet_ledgerentry e
    WHERE e.transaction_id IN (SELECT DISTINCT n.transaction_id FROM new_entries n)
    GROUP BY e.transaction_id, e.asset_id
    HAVING sum(e.amount) <> 0
    LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'journal transaction % does not balance: asset % sums to %',
            unbalanced.transaction_id, unbalanced.asset_id, unbalanced.total USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER wallet_ledgerentry_balanced
    AFTER INSERT ON wallet_ledgerentry
    REFERENCING NEW TABLE AS new_entries
    FOR EACH STATEMENT EXECUTE FUNCTION wallet_journal_balanced();

ALTER TABLE wallet_ledgerentry
    ADD CONSTRAINT wallet_entry_account_asset_fk FOREIGN KEY (account_id, asset_id)
    REFERENCES wallet_account (id, asset_id) DEFERRABLE INITIALLY DEFERRED;
"""

REVERSE = """
ALTER TABLE wallet_ledgerentry DROP CONSTRAINT wallet_entry_account_asset_fk;
DROP TRIGGER wallet_ledgerentry_balanced ON wallet_ledgerentry;
DROP FUNCTION wallet_journal_balanced();
DROP TRIGGER wallet_ledgerentry_append_only ON wallet_ledgerentry;
DROP TRIGGER wallet_ledgertransaction_append_only ON wallet_ledgertransaction;
DROP FUNCTION wallet_journal_append_only();
"""


class Migration(migrations.Migration):
    dependencies = [("wallet", "0001_initial")]

    operations = [migrations.RunSQL(FORWARD, REVERSE)]
