"""The shared kernel: what every service needs and nothing of ours feeds.

Settings (``TALLY_*``), logging, tracing, JWT auth, the HTTP middleware and problem+json
errors, and small async helpers. It imports nothing from the rest of Tally (an import-linter
contract in ``make lint`` keeps it so).
"""
