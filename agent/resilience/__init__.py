"""Error recovery for the real-time turn: breakers, bounded retry, spoken fallbacks, filler."""
