"""Tally: wiring shared by every process (settings, logging, the CLI, the local stack)."""
