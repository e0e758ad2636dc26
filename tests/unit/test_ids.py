"""Random UUIDs from a buffer: well-formed, never repeated, not even across threads or a fork."""

from __future__ import annotations

import os
import threading
import uuid

from kernel.ids import random_uuid


def test_ids_are_version_4_and_distinct_across_many_refills() -> None:
    ids = [random_uuid() for _ in range(5000)]  # about twenty 4 KiB buffers
    assert len(set(ids)) == len(ids)
    assert {i.version for i in ids} == {4}
    assert {i.variant for i in ids} == {uuid.RFC_4122}


def test_threads_taking_ids_at_once_never_get_the_same_one() -> None:
    taken: list[list[uuid.UUID]] = [[] for _ in range(4)]

    def take(into: list[uuid.UUID]) -> None:
        for _ in range(3000):
            into.append(random_uuid())

    threads = [threading.Thread(target=take, args=(into,)) for into in taken]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [i for into in taken for i in into]
    assert len(set(everything)) == len(everything) == 12000


def test_a_forked_child_does_not_repeat_its_parents_next_ids() -> None:
    random_uuid()  # the buffer is filled and partly used
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next ids, then leave at once
        os.close(read)
        os.write(write, b"".join(random_uuid().bytes for _ in range(8)))
        os._exit(0)
    os.close(write)
    child = b""
    while chunk := os.read(read, 4096):
        child += chunk
    os.close(read)
    os.waitpid(pid, 0)
    parent = [random_uuid() for _ in range(8)]
    children = [uuid.UUID(bytes=child[n : n + 16]) for n in range(0, len(child), 16)]
    assert len(children) == 8
    assert not set(children) & set(parent)
