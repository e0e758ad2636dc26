"""Random UUIDs (version 4) without a system call each.

``uuid.uuid4()`` asks the kernel for 16 bytes every time; on the write path that is one call per
request (its correlation id) and one per event, and a system call there is also where a busy
worker gets preempted. These come from the same source, ``os.urandom``, 4 KiB at a time. A
forked child starts with a fresh buffer, so it never repeats its parent's ids.
"""

from __future__ import annotations

import os
import threading
import uuid

_CHUNK = 4096
_lock = threading.Lock()
_buffer = b""
_offset = 0


def random_uuid() -> uuid.UUID:
    """A new random (version 4) UUID."""
    global _buffer, _offset
    with _lock:
        if _offset >= len(_buffer):
            _buffer, _offset = os.urandom(_CHUNK), 0
        raw = _buffer[_offset : _offset + 16]
        _offset += 16
    return uuid.UUID(bytes=raw, version=4)


def _forget_buffer() -> None:
    global _buffer, _offset, _lock
    _buffer, _offset, _lock = b"", 0, threading.Lock()


os.register_at_fork(after_in_child=_forget_buffer)
