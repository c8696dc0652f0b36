"""The audit log's hash chain: chaining after commit, signing its ends, and verifying it.

Chain order is (txid, id): the writing transaction's id, then the row id.
The chainer takes, in that order, the rows after its cursor whose writers
have all finished (``exchange.core.horizon``): no row can appear behind the
cursor later, so the chain never has to be revisited, nothing is missed, and
writers never wait for the chainer or for each other. A row is chained
within about a second of its commit (beat runs ``audit_chain`` every
AUDIT_CHAIN_INTERVAL_S), later only while an older transaction stays open.

Link ``seq`` of row R: ``hash = SHA-256(prev_hash || content(seq, R))``,
where ``prev_hash`` is link ``seq - 1``'s hash (32 zero bytes for the first)
and ``content`` is the UTF-8 JSON array (no spaces, keys in the order of
``CONTENT_SQL``) of the position and the row's columns, as PostgreSQL
renders them: ``[seq, id, "txid", "created_at", action, object_type,
object_id, market, actor_user_id, actor_api_key_id, actor_staff_id,
actor_system, subject_user_id, ip, user_agent, request_id, "before",
"after"]`` (before/after as the text of their jsonb, or null).
docs/AUDIT.md shows how to recompute it from an export.

The chainer publishes every link on ``audit.logs`` in the same transaction,
so a copy of each hash leaves the database: one ``INSERT ... SELECT`` per
batch builds the events from the rows and their new links in PostgreSQL
(the outbox's bulk-emitter path, like the matcher's and the ledger's). Building them in Python and passing
them through ``outbox_emit_many`` cost about 0.4 ms per row, mostly in the
driver's escaping of the JSON text array: ten times the rest of chaining.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from exchange.audit.signing import sign, signature_valid
from exchange.core.horizon import below_horizon
from exchange.outbox.models import OutboxEvent, Topic

GENESIS = bytes(32)
# The key of every audit.logs event: one partition, so consumers see the chain in order.
BUS_KEY = "chain"

# The row's columns as they are hashed; the same text for the chainer, verify and exports.
CONTENT_SQL = """
    a.id, a.txid::text, to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
    a.action, a.object_type, a.object_id, a.market, a.actor_user_id, a.actor_api_key_id, a.actor_staff_id,
    a.actor_system, a.subject_user_id, host(a.ip), a.user_agent, a.request_id, a.before::text, a.after::text
"""

def content_bytes(seq: int, row: tuple) -> bytes:
    """The bytes a link hashes after the previous hash: ``row`` as selected by CONTENT_SQL."""
    return json.dumps([seq, *row], ensure_ascii=False, separators=(",", ":")).encode()


def link_hash(prev_hash: bytes, seq: int, row: tuple) -> bytes:
    return hashlib.sha256(prev_hash + content_bytes(seq, row)).digest()


def position_message(seq: int, txid: int, log_id: int, hash_: bytes) -> str:
    """What the head and checkpoints sign: a chain position and its hash."""
    return f"audit-chain:{seq}:{txid}:{log_id}:{hash_.hex()}"


# -- chaining ------------------------------------------------------------------------------

_HEAD_ENSURE = """
    INSERT INTO exchange_auditchainhead (id, seq, txid, log_id, hash, signature, updated_at)
    VALUES (1, 0, 0, 0, %s, '', now()) ON CONFLICT (id) DO NOTHING
"""
_HEAD = "SELECT seq, txid, log_id, hash FROM exchange_auditchainhead WHERE id = 1"
_HEAD_LOCK = _HEAD + " FOR UPDATE"
# Is anything waiting? Asked before locking, so an idle run writes nothing (no transaction id, no WAL).
_ANY_NEW = f"""
    SELECT EXISTS (SELECT 1 FROM exchange_auditlog a
                   WHERE (a.txid, a.id) > (%s::text::xid8, %s) AND {below_horizon("a.txid")})
"""
_NEXT_ROWS = f"""
    SELECT {CONTENT_SQL}
    FROM exchange_auditlog a
    WHERE (a.txid, a.id) > (%s::text::xid8, %s) AND {below_horizon("a.txid")}
    ORDER BY a.txid, a.id
    LIMIT %s
"""
# The hashes travel as one bytea (the previous hash, then each new one, 32 bytes apiece):
# a bytea[] parameter costs the driver a regex substitution per element.
_INSERT_LINKS = """
    INSERT INTO exchange_auditchainlink (seq, log_id, prev_hash, hash, chained_at)
    SELECT %(first_seq)s + l.n - 1, l.log_id,
           substring(%(hashes)s::bytea FROM (l.n::int - 1) * 32 + 1 FOR 32),
           substring(%(hashes)s::bytea FROM l.n::int * 32 + 1 FOR 32), now()
    FROM unnest(%(log_ids)s::bigint[]) WITH ORDINALITY AS l(log_id, n)
"""
# One audit.logs event per new link (docs/AUDIT.md, "On the bus"), built by PostgreSQL.
_EMIT = f"""
    INSERT INTO {OutboxEvent._meta.db_table} (topic, key, event_type, version, payload, sequence)
    SELECT '{Topic.AUDIT.value}', '{BUS_KEY}', a.action, 1, jsonb_build_object(
               'seq', l.seq, 'hash', encode(l.hash, 'hex'), 'prev_hash', encode(l.prev_hash, 'hex'),
               'id', a.id, 'txid', a.txid::text,
               'created_at', to_char(a.created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'action', a.action, 'object_type', a.object_type, 'object_id', a.object_id, 'market', a.market,
               'actor_user_id', a.actor_user_id, 'actor_api_key_id', a.actor_api_key_id,
               'actor_staff_id', a.actor_staff_id, 'actor_system', a.actor_system,
               'subject_user_id', a.subject_user_id, 'ip', host(a.ip), 'user_agent', a.user_agent,
               'request_id', a.request_id, 'before', a.before, 'after', a.after), l.seq
    FROM exchange_auditchainlink l JOIN exchange_auditlog a ON a.id = l.log_id
    WHERE l.seq BETWEEN %s AND %s
    ORDER BY l.seq
"""
_HEAD_UPDATE = """
    UPDATE exchange_auditchainhead SET seq = %s, txid = %s, log_id = %s, hash = %s, signature = %s, updated_at = now()
    WHERE id = 1
"""


def audit_chain_batch(*, batch_size: int) -> int:
    """Chain up to ``batch_size`` rows in one transaction; returns how many.

    Cost: a read of the head and one index probe (all an idle run does), a
    locked read of the head, one index range scan of the log, one
    INSERT of the links, one INSERT ... SELECT of the outbox rows, one UPDATE
    of the head; in Python, one JSON encoding and one SHA-256 per row.
    Concurrent chainers queue on the head's row lock; writers never wait.
    """
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_HEAD)
        _, txid, log_id, _ = cursor.fetchone() or (0, 0, 0, GENESIS)
        cursor.execute(_ANY_NEW, [str(txid), log_id])
        if not cursor.fetchone()[0]:
            return 0
        cursor.execute(_HEAD_ENSURE, [GENESIS])
        cursor.execute(_HEAD_LOCK)
        seq, txid, log_id, prev_hash = cursor.fetchone()
        prev_hash = bytes(prev_hash)
        cursor.execute(_NEXT_ROWS, [str(txid), log_id, batch_size])
        rows = cursor.fetchall()
        if not rows:
            return 0
        first_seq = seq + 1
        hashes = [prev_hash]
        for row in rows:
            seq += 1
            prev_hash = link_hash(prev_hash, seq, row)
            hashes.append(prev_hash)
        cursor.execute(_INSERT_LINKS, {"first_seq": first_seq, "hashes": b"".join(hashes),
                                       "log_ids": [row[0] for row in rows]})
        cursor.execute(_EMIT, [first_seq, seq])
        last_txid, last_id = int(rows[-1][1]), rows[-1][0]
        cursor.execute(_HEAD_UPDATE, [seq, last_txid, last_id, prev_hash,
                                      sign(position_message(seq, last_txid, last_id, prev_hash))])
    return len(rows)


def audit_chain(*, batch_size: int | None = None, max_batches: int | None = None) -> int:
    """Chain every row below the horizon, batch after batch; returns how many rows were chained."""
    batch_size = batch_size or settings.AUDIT_CHAIN_BATCH_SIZE
    total = batches = 0
    while max_batches is None or batches < max_batches:
        count = audit_chain_batch(batch_size=batch_size)
        total += count
        batches += 1
        if count < batch_size:
            break
    return total


# -- verifying -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    kind: str  # ALTERED, MISSING, INSERTED, HEAD, CHECKPOINT
    message: str
    seq: int | None = None
    log_id: int | None = None
    # Where in chain order it is, to report the first problem first.
    position: tuple = ()


@dataclass
class Verification:
    checked: int = 0
    head_seq: int = 0
    checkpoint_seq: int = 0
    pending: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> Problem | None:
        return min(self.problems, key=lambda problem: problem.position) if self.problems else None


PROBLEMS_MAX = 1000

_CHECKPOINT = "SELECT seq, txid, log_id, hash, signature FROM exchange_auditcheckpoint ORDER BY seq DESC LIMIT 1"
_HEAD_SIGNED = "SELECT seq, txid, log_id, hash, signature FROM exchange_auditchainhead WHERE id = 1"
_LINKS = f"""
    SELECT l.seq, l.log_id, l.prev_hash, l.hash, a.id IS NOT NULL, {CONTENT_SQL}
    FROM exchange_auditchainlink l
    LEFT JOIN exchange_auditlog a ON a.id = l.log_id
    WHERE l.seq > %s
    ORDER BY l.seq
"""
# Rows inside the chained range (in chain order) that no link names: slipped in.
_UNLINKED = """
    SELECT a.id, a.txid::text::bigint FROM exchange_auditlog a
    WHERE (a.txid, a.id) <= (%s::text::xid8, %s)
      AND NOT EXISTS (SELECT 1 FROM exchange_auditchainlink l WHERE l.log_id = a.id)
    ORDER BY a.txid, a.id
    LIMIT %s
"""
_PENDING = "SELECT count(*) FROM exchange_auditlog a WHERE (a.txid, a.id) > (%s::text::xid8, %s)"


def audit_verify(*, fetch_size: int = 5000) -> Verification:
    """Recompute the chain from the last retention checkpoint to the head.

    In one read-only snapshot: the checkpoint's and the head's signatures;
    every link's hash over its row's current content (ALTERED), that its
    ``prev_hash`` is the previous link's hash and positions have no gap
    (MISSING: a row or link removed; INSERTED: a link slipped in), that each
    link's row exists (MISSING) and rows follow chain order; that the last
    link is the signed head (rows cut off the end); and that no row inside
    the chained range lacks a link (INSERTED). Rows after the head are not
    chained yet (``pending``). Memory stays flat: links are read through a
    server-side cursor.
    """
    result = Verification()
    outer = connection.in_atomic_block
    with transaction.atomic():
        with connection.cursor() as cursor:
            if not outer:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            cursor.execute(_HEAD_SIGNED)
            head = cursor.fetchone()
            cursor.execute(_CHECKPOINT)
            checkpoint = cursor.fetchone()
        head_seq, head_txid, head_log_id, head_hash, head_signature = head or (0, 0, 0, GENESIS, "")
        head_hash = bytes(head_hash)
        result.head_seq = head_seq

        def problem(kind, message, *, seq=None, log_id=None, position=()):
            if len(result.problems) < PROBLEMS_MAX:
                result.problems.append(Problem(kind, message, seq, log_id, position))

        if head_seq and not signature_valid(position_message(head_seq, head_txid, head_log_id, head_hash),
                                            head_signature):
            problem("HEAD", f"The chain head (position {head_seq}, row {head_log_id}) is not signed with the "
                            "audit signing key: it was moved or rewritten.", seq=head_seq, log_id=head_log_id,
                    position=(head_txid, head_log_id))
        seq_before, prev_hash, position = 0, GENESIS, (0, 0)
        if checkpoint is not None:
            cp_seq, cp_txid, cp_log_id, cp_hash, cp_signature = checkpoint
            seq_before, prev_hash, position = cp_seq, bytes(cp_hash), (cp_txid, cp_log_id)
            result.checkpoint_seq = cp_seq
            if not signature_valid(position_message(cp_seq, cp_txid, cp_log_id, prev_hash), cp_signature):
                problem("CHECKPOINT", f"The retention checkpoint at position {cp_seq} is not signed with the audit "
                                      "signing key: rows before it may have been deleted without retention.",
                        seq=cp_seq, position=(cp_txid, cp_log_id))

        cursor = connection.chunked_cursor()
        try:
            cursor.execute(_LINKS, [seq_before])
            expected_seq, prev_prev_hash, prev_log_id = seq_before + 1, None, None
            last_link = (seq_before, prev_hash)
            while rows := cursor.fetchmany(fetch_size):
                for seq, log_id, link_prev, link_hash_, exists, *content in rows:
                    link_prev, link_hash_ = bytes(link_prev), bytes(link_hash_)
                    result.checked += 1
                    if seq != expected_seq:
                        problem("MISSING", f"Chain positions {expected_seq} to {seq - 1} are missing (before row "
                                           f"{log_id}): their rows and links were deleted.",
                                seq=expected_seq, log_id=log_id, position=position + (0,))
                    elif link_prev != prev_hash:
                        if prev_log_id is not None and link_prev == prev_prev_hash:
                            problem("INSERTED", f"Row {prev_log_id} (position {seq - 1}) was slipped into the "
                                                f"chain before row {log_id}.", seq=seq - 1, log_id=prev_log_id,
                                    position=position)
                        else:
                            problem("MISSING", f"A row before row {log_id} (position {seq}) was removed: the link "
                                               "does not follow the one before it.", seq=seq, log_id=log_id,
                                    position=position + (0,))
                    if not exists:
                        problem("MISSING", f"Row {log_id} (position {seq}) was deleted.", seq=seq, log_id=log_id,
                                position=position + (1,))
                    else:
                        row = tuple(content)
                        row_position = (int(row[1]), row[0])
                        if row_position <= position:
                            problem("INSERTED", f"Row {log_id} (position {seq}) is out of chain order: it was "
                                                "inserted with a forged position.", seq=seq, log_id=log_id,
                                    position=row_position)
                        elif link_hash(link_prev, seq, row) != link_hash_:
                            problem("ALTERED", f"Row {log_id} (position {seq}) was altered: its content no longer "
                                               "matches its hash.", seq=seq, log_id=log_id, position=row_position)
                        position = max(position, row_position)
                    expected_seq, prev_prev_hash, prev_hash, prev_log_id = seq + 1, prev_hash, link_hash_, log_id
                    last_link = (seq, link_hash_)
        finally:
            cursor.close()

        if last_link != (head_seq, head_hash):
            problem("MISSING", f"The chain ends at position {last_link[0]} but its signed head is at {head_seq}: "
                               "links at the end were deleted or added.", seq=last_link[0] + 1,
                    position=position + (2,))
        with connection.cursor() as cursor:
            cursor.execute(_UNLINKED, [str(head_txid), head_log_id, PROBLEMS_MAX])
            for log_id, txid in cursor.fetchall():
                problem("INSERTED", f"Row {log_id} was inserted: it lies inside the chained range but has no link.",
                        log_id=log_id, position=(txid, log_id))
            cursor.execute(_PENDING, [str(head_txid), head_log_id])
            [result.pending] = cursor.fetchone()
    return result
