"""Our own errors; driver errors never leak past the adapters."""


class EventStoreError(Exception):
    """The store could not do what was asked."""


class ConcurrencyError(EventStoreError):
    """A stream moved on since the caller read it (expected version mismatch)."""
