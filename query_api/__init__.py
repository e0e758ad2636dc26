"""The read side HTTP API (scores, ranked threads, search, live updates)."""
