"""The transactional outbox and the event bus (see docs/EVENTS.md).

Every change others must see (orders, trades, balances, markets, audit)
writes an ``OutboxEvent`` row in the same database transaction as the change
(``services``). After commit the relay task is kicked; the relay
(``relay``) publishes pending rows in id order to the bus (``bus``: Kafka
when ``KAFKA_BOOTSTRAP_SERVERS`` is set, Redis streams otherwise) and marks
them published. Consumers dedupe by event id (``consumer``).
"""
