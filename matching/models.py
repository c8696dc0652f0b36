"""The matching engine (engine/, pure) and the per-market matcher process (worker)."""
