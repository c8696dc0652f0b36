"""Snapshots of a market's book on disk, for restarts in seconds on big books.

Rebuilding a book of 1,000,000 orders from PostgreSQL takes 10-12 s (an
ordered read of every resting row and a Decimal-to-integer conversion per
order). A snapshot file holds the engine's ``snapshot()`` at a known market
sequence S, in columns of machine integers, so loading it costs about what
``OrderBook.restore`` costs. PostgreSQL stays the authority:

**Writing** (``SnapshotWriter``): every ``MATCHER_SNAPSHOT_EVERY_S`` seconds
(and right after a recovery that had to read a big book from the database),
if the book moved since the last one, the matcher ``fork()``s; the child
takes ``book.snapshot()`` of its copy-on-write image of the book, encodes
it, writes ``<DATA_DIR>/snapshots/<SYMBOL>.snap`` through a temporary file,
``fsync`` and ``rename`` (a crash leaves the old file or the new one, never
half of one) and exits with ``os._exit`` (it never touches the parent's
database or Redis connections). The matcher's loop does not wait: it reaps
the child with ``waitpid(WNOHANG)``. At most one child runs at a time.

**Loading** (``load_book``): read the file; refuse it unless its magic,
format, market id, symbol and SHA-256 of the payload are right and its
sequence S is not ahead of the market's ``last_sequence`` D. If S < D the
book moved after the snapshot: every order an engine event touched since
carries ``last_sequence > S`` in its row, so one query returns them all;
each is dropped from the snapshot's rows, updated in place (still resting,
queue position kept: ``priority_sequence <= S``), or appended at the back of
its price level (a queue position taken after S is behind every order of the
snapshot). Untriggered stops are few and always read from the database. The
result is checked against the database (count of resting orders, sum of
their ids, of their remaining quantities and of their prices) before
``OrderBook.restore``; any mismatch, any unreadable or stale file, any
error, falls back to the full rebuild from the database
(``rebuild.book_from_database``) with a warning saying why.

Why a file and not a table: the snapshot is a cache that PostgreSQL can
always replace; writing 40-50 MB to a table every minute would go through
the WAL (and to every replica and backup) for nothing, and the child of
``fork()`` must not use the parent's database connection. On another host,
or after a restore of the database from a backup, the file is missing or
ahead of the database, and the rebuild from the database is used.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
import marshal
import os
import time
from array import array
from bisect import bisect_right
from itertools import islice
from decimal import Decimal
from pathlib import Path

from django.conf import settings
from django.db import connection

from matching.engine import ORDER_COLUMNS, SNAPSHOT_FORMAT, OrderBook
from matching.models import MarketState
from matching.units import MarketUnits
from matching.worker.rebuild import RESTING_FIELDS, book_from_database, resting_row, snapshot_header, stop_rows
from orders.models import Order, OrderStatus

logger = logging.getLogger(__name__)

MAGIC = b"exchange-book-snapshot\n"
FILE_FORMAT = 1
INT_COLUMNS = ORDER_COLUMNS[:6]  # order_id .. notional_tl_filled: machine integers
TEXT_COLUMNS = ORDER_COLUMNS[6:]  # order_type, stp_mode: a code per row into a table of strings
RESTING = (OrderStatus.NEW, OrderStatus.PARTIALLY_FILLED)


class SnapshotUnusable(Exception):
    """The file cannot stand for the book; the reason is the message."""


def _setting(name: str, default):
    """A Django setting, else the environment variable of the same name, else ``default``."""
    value = getattr(settings, name, None)
    if value is None:
        value = os.environ.get(name) or default
    return value


def snapshot_every_s() -> float:
    return float(_setting("MATCHER_SNAPSHOT_EVERY_S", 60.0))


def snapshot_after_rebuild_min_orders() -> int:
    return int(_setting("MATCHER_SNAPSHOT_AFTER_REBUILD_MIN_ORDERS", 10_000))


def snapshot_dir() -> Path:
    """``<DATA_DIR>/snapshots/<database name>``: two databases sharing a data
    directory (a benchmark's throwaway one, tests) never see each other's files."""
    configured = getattr(settings, "MATCHER_SNAPSHOT_DIR", None)
    if configured:
        return Path(configured)
    return Path(settings.DATA_DIR) / "snapshots" / str(connection.settings_dict["NAME"])


def path_for(symbol: str) -> Path:
    return snapshot_dir() / f"{symbol}.snap"


# ------------------------------------------------------------------ encoding


def _int_column(values) -> bytes | list:
    try:
        return array("q", values).tobytes()
    except OverflowError:  # a notional beyond 2**63: marshal keeps Python ints
        return list(values)


def market_identity(market) -> dict:
    """What ties a file to one market of one database: a database re-created
    with the same ids (a benchmark's, a restore) has other creation times."""
    return {"market_id": market.id, "symbol": market.symbol, "market_created": market.created_at.isoformat()}


def encode(snapshot: dict, *, identity: dict) -> bytes:
    """The file's bytes for an engine ``snapshot()`` of market ``market_id``."""
    sides = {}
    for side in ("bids", "asks"):
        rows = snapshot[side]
        columns = list(zip(*rows)) if rows else [()] * len(ORDER_COLUMNS)
        encoded = {"count": len(rows)}
        for name, values in zip(ORDER_COLUMNS, columns):
            if name in TEXT_COLUMNS:
                table = sorted(set(values))
                index = {text: code for code, text in enumerate(table)}
                encoded[name] = (table, bytes(index[text] for text in values))
            else:
                encoded[name] = _int_column(values)
        sides[side] = encoded
    payload = marshal.dumps({
        "book": {key: value for key, value in snapshot.items() if key not in ("bids", "asks")},
        "bids": sides["bids"],
        "asks": sides["asks"],
    })
    header = {
        "file_format": FILE_FORMAT,
        "engine_format": snapshot["format"],
        "market": identity,
        "sequence": snapshot["sequence"],
        "orders": sides["bids"]["count"] + sides["asks"]["count"],
        "payload_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "written_at": time.time(),
    }
    return MAGIC + json.dumps(header, sort_keys=True).encode() + b"\n" + payload


def _decode_ints(value) -> list | array:
    if isinstance(value, bytes):
        column = array("q")
        column.frombytes(value)
        return column
    return value


def decode(data: bytes) -> tuple[dict, dict]:
    """``(header, content)`` of a file's bytes; raises SnapshotUnusable."""
    if not data.startswith(MAGIC):
        raise SnapshotUnusable("not a snapshot file")
    end = data.find(b"\n", len(MAGIC))
    if end < 0:
        raise SnapshotUnusable("truncated header")
    try:
        header = json.loads(data[len(MAGIC):end])
    except ValueError as exc:
        raise SnapshotUnusable(f"unreadable header: {exc}") from None
    payload = memoryview(data)[end + 1:]
    if header.get("file_format") != FILE_FORMAT or header.get("engine_format") != SNAPSHOT_FORMAT:
        raise SnapshotUnusable(f"format {header.get('file_format')}/{header.get('engine_format')} is not this version's")
    if len(payload) != header.get("payload_bytes"):
        raise SnapshotUnusable(f"payload is {len(payload)} bytes, header says {header.get('payload_bytes')}")
    if hashlib.sha256(payload).hexdigest() != header.get("sha256"):
        raise SnapshotUnusable("checksum mismatch")
    try:
        content = marshal.loads(payload)
    except (ValueError, EOFError, TypeError) as exc:  # pragma: no cover - the checksum matched
        raise SnapshotUnusable(f"unreadable payload: {exc}") from None
    for side in ("bids", "asks"):
        encoded = content[side]
        for name in INT_COLUMNS:
            encoded[name] = _decode_ints(encoded[name])
    return header, content


def side_rows(encoded: dict):
    """The rows of one side (tuples of ``ORDER_COLUMNS``), lazily: no list of a million lists."""
    columns = [encoded[name] for name in INT_COLUMNS]
    for name in TEXT_COLUMNS:
        table, codes = encoded[name]
        columns.append(map(table.__getitem__, codes))
    return zip(*columns)


# ------------------------------------------------------------------- writing


def write_file(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically and durably."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def write_snapshot(book: OrderBook, *, identity: dict, path: Path) -> Path:
    """Write ``book``'s snapshot now, in this process."""
    write_file(path, encode(book.snapshot(), identity=identity))
    return path


class SnapshotWriter:
    """Periodic snapshots of one matcher's book, each written by a forked child."""

    def __init__(self, market, *, every_s: float | None = None):
        self.symbol = market.symbol
        self.identity = market_identity(market)
        self.path = path_for(market.symbol)  # resolved here: the child must not need the database
        self.every_s = snapshot_every_s() if every_s is None else every_s
        self.child_pid: int | None = None
        self.child_sequence: int | None = None
        self.last_sequence: int | None = None  # of the last snapshot written
        self.last_started = time.monotonic()
        self.due_now = False
        self.written = 0

    def after_recovery(self, book: OrderBook, *, from_database: bool) -> None:
        """A big book read from the database: snapshot it at the next tick."""
        if from_database and len(book) >= snapshot_after_rebuild_min_orders() and self.every_s > 0:
            self.due_now = True

    def due(self) -> bool:
        """Whether ``tick`` would start a snapshot now (if the book moved); reaps a finished child first."""
        self.reap()
        return (self.child_pid is None and self.every_s > 0
                and (self.due_now or time.monotonic() - self.last_started >= self.every_s))

    def tick(self, book: OrderBook) -> None:
        """Reap a finished child; start one if a snapshot is due and the book moved.
        ``book`` must be as committed (the matcher lands the batch in flight first)."""
        if not self.due():
            return
        now = time.monotonic()
        if book.sequence == self.last_sequence:
            self.last_started = now
            return
        self.due_now = False
        self.last_started = now
        self.child_sequence = book.sequence
        pid = os.fork()
        if pid == 0:  # the child: its own copy of the book; nothing else is touched
            status = 1
            try:
                gc.disable()  # a collection would write to every object's page: copies for nothing
                write_snapshot(book, identity=self.identity, path=self.path)
                status = 0
            finally:
                os._exit(status)
        self.child_pid = pid

    def reap(self, *, wait: bool = False) -> None:
        if self.child_pid is None:
            return
        pid, status = os.waitpid(self.child_pid, 0 if wait else os.WNOHANG)
        if pid == 0:
            return
        self.child_pid = None
        if os.waitstatus_to_exitcode(status) == 0:
            self.last_sequence = self.child_sequence
            self.written += 1
            logger.info("book snapshot written", extra={"symbol": self.symbol, "sequence": self.child_sequence})
        else:
            logger.warning("book snapshot failed", extra={"symbol": self.symbol, "status": status})

    def close(self) -> None:
        self.reap(wait=True)


# ------------------------------------------------------------------- loading


def load_book(market) -> tuple[OrderBook, str]:
    """The market's book: from its snapshot brought up to date, else from the
    database. Returns ``(book, source)``, source ``"snapshot"`` or ``"database"``.

    The collector is off meanwhile: building a million objects, it would
    otherwise walk the growing heap again and again (docs/TRADING.md)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _load_book(market)
    finally:
        if enabled:
            gc.enable()


def _load_book(market) -> tuple[OrderBook, str]:
    path = path_for(market.symbol)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return book_from_database(market), "database"
    except OSError as exc:
        reason = str(exc)
    else:
        try:
            return book_from_snapshot(market, data), "snapshot"
        except SnapshotUnusable as exc:
            reason = str(exc)
        except Exception as exc:  # never worse than the rebuild
            logger.exception("loading the book snapshot failed", extra={"symbol": market.symbol})
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            del data
    logger.warning("book snapshot not used; rebuilding from the database",
                   extra={"symbol": market.symbol, "reason": reason})
    return book_from_database(market), "database"


def book_from_snapshot(market, data: bytes) -> OrderBook:
    header, content = decode(data)
    if header.get("market") != market_identity(market):
        raise SnapshotUnusable(f"snapshot of another market: {header.get('market')}")
    units = MarketUnits.of(market)
    state = MarketState.objects.get(market=market)
    taken_at = header["sequence"]
    if content["book"]["sequence"] != taken_at:
        raise SnapshotUnusable("header and payload sequences differ")
    if taken_at > state.last_sequence:
        raise SnapshotUnusable(f"snapshot at sequence {taken_at} is ahead of the database ({state.last_sequence})")
    snapshot = snapshot_header(market, units, state)  # sequence, price, status: the database's
    sides = {"bids": content["bids"], "asks": content["asks"]}
    changed = _changed_since(market, units, taken_at) if taken_at < state.last_sequence else {}
    expected = {"count": 0, "ids": 0, "lots": 0, "ticks": 0}
    for side, book_side in (("bids", "BUY"), ("asks", "SELL")):
        encoded = sides[side]
        mine = {order_id: row for order_id, row in changed.items() if row[0] == book_side or row[0] is None}
        expected["count"] += encoded["count"]
        expected["ids"] += sum(encoded["order_id"])
        expected["lots"] += sum(encoded["quantity_lots_remaining"])
        expected["ticks"] += sum(encoded["price_ticks"])
        if not mine:
            snapshot[side] = side_rows(encoded)
            continue
        edits = _edits(encoded, mine, taken_at, bid=book_side == "BUY")
        for _, _, removed, added in edits:
            for row, sign in ((removed, -1), (added, 1)):
                if row is not None:
                    expected["count"] += sign
                    expected["ids"] += sign * row[0]
                    expected["lots"] += sign * row[3]
                    expected["ticks"] += sign * row[2]
        snapshot[side] = _edited_rows(side_rows(encoded), edits)
    _verify(market, units, expected)
    snapshot["stops"] = stop_rows(market, units)
    book = OrderBook.restore(snapshot)
    if book.sequence != state.last_sequence:  # pragma: no cover - restore keeps the header's
        raise SnapshotUnusable("restored book is not at the database's sequence")
    if len(book) != expected["count"] + len(snapshot["stops"]):  # pragma: no cover - the edits' own check
        raise SnapshotUnusable(f"restored {len(book)} orders, expected {expected['count']} and the stops")
    return book


def _changed_since(market, units: MarketUnits, sequence: int) -> dict[int, tuple]:
    """Every order of the market an engine event touched after ``sequence``:
    id -> (side if still resting else None, priority_sequence, engine row)."""
    changed = {}
    fields = ("status", "side", "priority_sequence", *RESTING_FIELDS)
    rows = Order.objects.filter(market=market, last_sequence__gt=sequence).values_list(*fields)
    for status, side, priority, *resting in rows.iterator(20_000):
        if status in RESTING:
            changed[resting[0]] = (side, priority, tuple(resting_row(units, resting)))
        else:
            changed[resting[0]] = (None, priority, None)
    return changed


def _edits(encoded: dict, changed: dict, taken_at: int, *, bid: bool) -> list[tuple]:
    """What ``changed`` does to one side's rows (best price first, queue order),
    as ``(index, rank, removed row, added row)`` sorted by position: a row
    dropped (``added`` None), replaced in place (both), or inserted before
    the original row at ``index`` (``removed`` None). See the module docstring."""
    ids = encoded["order_id"]
    hits = [index for index, order_id in enumerate(ids) if order_id in changed]  # one pass, no row built
    edits = []
    in_place = set()
    for index in hits:
        order_id = ids[index]
        removed = (order_id, encoded["user_id"][index], encoded["price_ticks"][index],
                   encoded["quantity_lots_remaining"][index])
        side, priority, new_row = changed[order_id]
        if side is not None and priority is not None and priority <= taken_at:
            if new_row[2] != removed[2]:
                raise SnapshotUnusable(f"order {order_id} moved price but kept its queue position")
            edits.append((index, 1, removed, new_row))  # same place in the queue: filled a little, or amended down
            in_place.add(order_id)
        else:
            edits.append((index, 1, removed, None))
    behind = sorted(
        (change for order_id, change in changed.items() if change[0] is not None and order_id not in in_place),
        key=lambda change: change[1] or 0)
    prices = encoded["price_ticks"]
    for rank, (side, priority, new_row) in enumerate(behind):
        if priority is None or priority <= taken_at:
            raise SnapshotUnusable(f"order {new_row[0]} rests since before the snapshot but is not in it")
        price = new_row[2]
        # The back of its price level: before the first original row at a worse price.
        index = bisect_right(prices, -price, key=int.__neg__) if bid else bisect_right(prices, price)
        # Inserts at one place go best price first, then by queue position; before the original row.
        edits.append((index, 0, None, new_row, -price if bid else price, rank))
    edits.sort(key=lambda edit: (edit[0], edit[1], *(edit[4:] if len(edit) > 4 else ())))
    return [edit[:4] for edit in edits]


def _edited_rows(rows, edits: list[tuple]):
    """``rows`` (an iterator of the original rows) with ``edits`` applied, lazily."""
    position = 0
    for index, _, removed, added in edits:
        if index > position:
            yield from islice(rows, index - position)
            position = index
        if removed is not None:  # the original row at ``index``: drop it
            next(rows)
            position += 1
        if added is not None:
            yield added
    yield from rows


def _verify(market, units: MarketUnits, expected: dict) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            f"""SELECT count(*), coalesce(sum(id), 0), coalesce(sum(quantity - filled_quantity), 0),
                       coalesce(sum(price), 0)
                FROM {Order._meta.db_table} WHERE market_id = %s AND status = ANY(%s)""",
            [market.id, list(RESTING)])
        count, ids, remaining, prices = cursor.fetchone()
    got = {"count": count, "ids": int(ids), "lots": units.quantity_to_lots(Decimal(remaining)),
           "ticks": units.price_to_ticks(Decimal(prices))}
    if got != expected:
        raise SnapshotUnusable(f"does not match the database: database {got}, snapshot brought up to date {expected}")
