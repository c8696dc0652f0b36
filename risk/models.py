"""Pre-trade limits, kill switches and post-trade analysis."""
