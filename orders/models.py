"""Orders and trades: placement, cancel and amend services, and the trading API."""
