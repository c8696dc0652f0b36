"""The compliance audit trail: an append-only, hash-chained log of every mutation, its
exports, and the retention of audited data (docs/AUDIT.md).

- ``models``: AuditLog (table ``exchange_auditlog``), the chain, checkpoints, legal holds.
- ``services``: ``audit_log_record`` and ``audit_context``, what every writer calls.
- ``chain``: chaining after commit and ``audit_verify``.
- ``exports``: streaming CSV / JSON Lines of the audit log, orders, trades and the ledger.
- ``retention``: deleting what is past its retention period and under no legal hold.
"""
