"""The event bus behind one interface: Kafka, or Redis streams without it.

``Bus.publish(messages)`` sends a batch and returns once the bus answered for
every message of it: stored, or refused. It returns the refused ones (their
index in the batch and the bus's error): a refusal is about that message
(too large for Kafka, a Redis key of the wrong type), and the relay sets it
aside while the others go on. When the bus does not answer for the batch
(unreachable, timed out, out of memory, no leader) ``publish`` raises
``BusError``: some messages may have been stored, the relay publishes the
whole batch again later, and consumers dedupe by event id.

``get_bus()`` is the process's bus: ``KafkaBus`` when
``KAFKA_BOOTSTRAP_SERVERS`` is set, else ``RedisStreamBus``.
"""

from __future__ import annotations

import logging
import threading
from typing import Callable, NamedTuple, Protocol, Sequence

import hiredis
import redis
from django.conf import settings

from exchange.outbox.models import Topic

logger = logging.getLogger(__name__)


class Message(NamedTuple):
    topic: str
    key: str
    event_id: str
    event_type: str
    value: str  # the event envelope, JSON (docs/EVENTS.md)


class BusError(Exception):
    """The bus did not answer for a batch: it is unavailable, not refusing these messages."""


# Refused messages: index in the batch -> the bus's error.
Refusals = dict[int, str]


class Bus(Protocol):
    """``publish`` takes Messages, or any sequences that start with the same
    five fields in the same order (the relay passes its rows as they come)."""

    name: str

    def publish(self, messages: Sequence[Message]) -> Refusals: ...

    def close(self) -> None: ...


def stream_name(topic: str) -> str:
    """The Redis stream that carries ``topic``: ``bus:order.events``."""
    return f"{settings.OUTBOX_REDIS_STREAM_PREFIX}{topic}"


class RedisStreamBus:
    """One stream per topic (``bus:<topic>``), capped near
    OUTBOX_REDIS_STREAM_MAXLEN entries. A stream is totally ordered, so order
    per key holds; entry fields: event_id, type, key, event (the envelope).

    A batch is one write of pipelined XADD commands, packed by hiredis, and
    their replies read back: redis-py's pipeline object spends about 15 us of
    Python per command, this about 4 (docs/BENCHMARKS.md). An error reply
    about the command (WRONGTYPE, ERR) refuses that message; one about the
    server (OOM, READONLY, LOADING..., which redis-py raises as subclasses of
    ResponseError, or the codes in UNAVAILABLE) or a broken connection makes
    the batch unconfirmed (``BusError``).
    """

    name = "redis"
    UNAVAILABLE = ("OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN", "CLUSTERDOWN", "NOREPLICAS",
                   "MISCONF")

    def __init__(self, client_factory: Callable[[], redis.Redis] | None = None, maxlen: int | None = None):
        if client_factory is None:
            from exchange.core.redis import get_redis

            client_factory = get_redis
        self._client_factory = client_factory
        self.maxlen = str(maxlen or settings.OUTBOX_REDIS_STREAM_MAXLEN)

    def publish(self, messages: Sequence[Message]) -> Refusals:
        streams = {topic: stream_name(topic) for topic in {message[0] for message in messages}}
        maxlen = self.maxlen
        # Fields by position (topic, key, event_id, type, envelope): the relay passes its rows.
        packed = b"".join([
            hiredis.pack_command(("XADD", streams[m[0]], "MAXLEN", "~", maxlen, "*", "event_id", m[2],
                                  "type", m[3], "key", m[1], "event", m[4]))
            for m in messages
        ])
        pool = self._client_factory().connection_pool
        try:
            connection = pool.get_connection()
        except (redis.RedisError, OSError) as error:
            raise BusError(f"redis: {error}") from error
        errors: dict[int, redis.ResponseError] = {}
        try:
            connection.send_packed_command([packed])
            for index in range(len(messages)):
                try:
                    connection.read_response(disable_decoding=True)
                except redis.ResponseError as error:  # the reply was read whole: the next ones follow
                    errors[index] = error
        except (redis.RedisError, OSError) as error:
            connection.disconnect()  # replies may be left unread: never reuse it
            raise BusError(f"redis: {error}") from error
        finally:
            pool.release(connection)
        unavailable = next((error for error in errors.values()
                            if type(error) is not redis.ResponseError or str(error).startswith(self.UNAVAILABLE)),
                           None)
        if unavailable is not None:
            raise BusError(f"redis: {type(unavailable).__name__}: {unavailable}")
        return {index: f"redis: {error}" for index, error in errors.items()}

    def close(self) -> None:
        pass


class KafkaBus:
    """kafka-python producer: idempotent, acks=all, keyed (one partition per
    key, so order per key holds), at most 5 requests in flight (the most
    idempotence keeps ordered). A batch is flushed and every future checked.
    A message is refused when the error is about it (too large, invalid,
    its topic not allowed: ``_refusal``); the producer refuses an oversized
    one before sending it, and then the later messages of its key in the
    batch are not sent either, so none is stored ahead of it. Any other
    error (no broker, a timeout, no leader) makes the batch unconfirmed, and
    the producer is dropped with whatever it still queued; a new one serves
    the next batch."""

    name = "kafka"

    def __init__(self, bootstrap_servers: str | list[str] | None = None, *, timeout_ms: int | None = None,
                 partitions: int | None = None, client_id: str = "exchange-outbox"):
        servers = bootstrap_servers or settings.KAFKA_BOOTSTRAP_SERVERS
        self.bootstrap_servers = servers.split(",") if isinstance(servers, str) else list(servers)
        self.timeout_ms = timeout_ms or settings.OUTBOX_KAFKA_TIMEOUT_MS
        self.partitions = partitions or settings.OUTBOX_KAFKA_PARTITIONS
        self.client_id = client_id
        self._producer = None
        self._topics_ready = False
        self._lock = threading.Lock()

    def producer_config(self) -> dict:
        return dict(
            bootstrap_servers=self.bootstrap_servers,
            client_id=self.client_id,
            enable_idempotence=True,
            acks="all",
            max_in_flight_requests_per_connection=5,
            linger_ms=5,
            batch_size=256 * 1024,
            max_block_ms=self.timeout_ms,
            request_timeout_ms=self.timeout_ms,
            delivery_timeout_ms=self.timeout_ms * 2,
            reconnect_backoff_max_ms=1000,
        )

    def ensure_topics(self) -> None:
        """Create the five topics if they do not exist (partitions: OUTBOX_KAFKA_PARTITIONS)."""
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic
        from kafka.errors import TopicAlreadyExistsError

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap_servers, client_id=f"{self.client_id}-admin",
                                 request_timeout_ms=self.timeout_ms)
        try:
            existing = set(admin.list_topics())
            missing = [NewTopic(name=topic, num_partitions=self.partitions, replication_factor=1)
                       for topic in Topic.values if topic not in existing]
            if missing:
                try:
                    admin.create_topics(missing)
                except TopicAlreadyExistsError:
                    pass
        finally:
            admin.close()

    @property
    def producer(self):
        from kafka import KafkaProducer

        if self._producer is None:
            if not self._topics_ready:
                self.ensure_topics()
                self._topics_ready = True
            self._producer = KafkaProducer(**self.producer_config())
        return self._producer

    @staticmethod
    def _refusal(error: Exception) -> bool:
        from kafka import errors

        return isinstance(error, (errors.MessageSizeTooLargeError, errors.RecordListTooLargeError,
                                  errors.InvalidRecordError, errors.CorruptRecordError, errors.InvalidTopicError,
                                  errors.TopicAuthorizationFailedError))

    def publish(self, messages: Sequence[Message]) -> Refusals:
        messages = [Message(*message[:5]) for message in messages]
        refused: Refusals = {}
        with self._lock:
            try:
                producer = self.producer
                futures = []
                stopped = set()  # keys with a message refused before sending: the later ones are not sent
                for index, message in enumerate(messages):
                    if (message.topic, message.key) in stopped:
                        refused[index] = "kafka: not sent: an earlier message of its key was refused"
                        continue
                    try:
                        futures.append((index, producer.send(
                            message.topic, key=message.key.encode(), value=message.value.encode(),
                            headers=[("event_id", message.event_id.encode()),
                                     ("type", message.event_type.encode())])))
                    except Exception as error:  # noqa: BLE001 - the size check raises here, before sending
                        if not self._refusal(error):
                            raise
                        refused[index] = f"kafka: {type(error).__name__}: {error}"
                        stopped.add((message.topic, message.key))
                producer.flush(timeout=self.timeout_ms / 1000)
                for index, future in futures:
                    try:
                        future.get(timeout=0)  # raises the failure of that message, if any
                    except Exception as error:  # noqa: BLE001
                        if not self._refusal(error):
                            raise
                        refused[index] = f"kafka: {type(error).__name__}: {error}"
            except Exception as error:  # noqa: BLE001 - kafka-python raises many kinds
                self._drop_producer()
                raise BusError(f"kafka: {type(error).__name__}: {error}") from error
        return refused

    def _drop_producer(self) -> None:
        producer, self._producer = self._producer, None
        self._topics_ready = False  # a broker that came back may have lost them (or be a new cluster)
        if producer is not None:
            try:
                producer.close(timeout=0)
            except Exception:  # noqa: BLE001 - close() flushes first, which times out with records queued
                logger.debug("closing the failed Kafka producer", exc_info=True)
                # Stop its sender thread anyway, dropping what it queued: the relay resends those rows.
                sender = getattr(producer, "_sender", None)
                if sender is not None:
                    sender.force_close()

    def close(self) -> None:
        with self._lock:
            if self._producer is not None:
                try:
                    self._producer.close(timeout=self.timeout_ms / 1000)
                finally:
                    self._producer = None


_bus: Bus | None = None
_bus_lock = threading.Lock()


def get_bus() -> Bus:
    """The process's bus, made on first use from the settings."""
    global _bus
    with _bus_lock:
        if _bus is None:
            _bus = KafkaBus() if settings.KAFKA_BOOTSTRAP_SERVERS else RedisStreamBus()
        return _bus


def reset_bus() -> None:
    """Forget the process's bus (tests, settings changes)."""
    global _bus
    with _bus_lock:
        bus, _bus = _bus, None
    if bus is not None:
        bus.close()
