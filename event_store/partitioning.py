"""Which Kafka partition a comment's events go to. The relay and the projectors share it."""

from __future__ import annotations

from uuid import UUID


def partition_for(comment_id: UUID | str, partitions: int) -> int:
    """A stable partition for ``comment_id`` among ``partitions``."""
    value = comment_id if isinstance(comment_id, UUID) else UUID(str(comment_id))
    return value.int % partitions
