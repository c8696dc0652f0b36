"""The matcher process of one market: stream consumer, recovery, batch application."""
