"""The event store: an append-only log with a transactional outbox, and its relay."""
