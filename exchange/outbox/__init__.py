"""The transactional outbox and the event bus (see docs/EVENTS.md).

Every change others must see (orders, trades, balances, markets, audit)
writes an ``OutboxEvent`` row in the same database transaction as the change
(``services``). The relay (``relay``, run by ``manage.py run_outbox_relay``)
polls for transactions that committed and publishes their rows, in commit
order, to the bus (``bus``: Kafka when ``KAFKA_BOOTSTRAP_SERVERS`` is set,
Redis streams otherwise), advancing a cursor rather than marking rows.
Consumers dedupe by event id (``consumer``).
"""
