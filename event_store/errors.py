"""Our own errors; driver errors never leak past the adapters."""


class EventStoreError(Exception):
    """The store could not do what was asked."""


class ConcurrencyError(EventStoreError):
    """A stream moved on since the caller read it (expected version mismatch)."""


class StoreUnavailable(EventStoreError):
    """PostgreSQL cannot be reached, or gave up on the statement (a timeout); nothing written."""


class CommitOutcomeUnknown(StoreUnavailable):
    """The connection was lost while the commit was under way: it may or may not have happened.

    The caller finds out by reading back what it wrote (for example an event id).
    """
