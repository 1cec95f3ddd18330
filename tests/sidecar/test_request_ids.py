"""Request ids: random UUIDs (version 4), never handed out twice, not even to a
forked child (the random bits are read from the OS ahead, in blocks)."""

from __future__ import annotations

import os
import uuid

from aegis.sidecar.exchange.record import new_request_id


def test_ids_are_uuid4_hex_and_unique_across_many_blocks() -> None:
    ids = [new_request_id() for _ in range(5000)]  # about twenty blocks read ahead
    assert len(set(ids)) == len(ids)
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.version, parsed.variant, parsed.hex) == (4, uuid.RFC_4122, value)


def test_a_forked_child_does_not_reuse_the_parents_ids() -> None:
    new_request_id()  # the parent now holds ids read ahead
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id, then leave without cleanup
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 64).decode()
    os.close(read)
    os.waitpid(pid, 0)
    parent = [new_request_id() for _ in range(300)]  # the rest of the parent's block
    assert len(child) == 32
    assert child not in parent
