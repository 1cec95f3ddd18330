"""Request ids: time-ordered UUIDs (version 7, RFC 9562), never handed out twice,
not even to a forked child (the random bits are read from the OS ahead, in blocks)."""

from __future__ import annotations

import os
import time
import uuid

from aegis.sidecar.exchange.record import new_request_id


def test_ids_are_uuid7_hex_unique_across_many_blocks_and_in_time_order() -> None:
    before = time.time_ns() // 1_000_000
    ids = [new_request_id() for _ in range(5000)]  # about twenty blocks read ahead
    after = time.time_ns() // 1_000_000
    assert len(set(ids)) == len(ids)
    stamps = []
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.version, parsed.variant, parsed.hex) == (7, uuid.RFC_4122, value)
        assert before <= parsed.int >> 80 <= after  # unix_ts_ms
        stamps.append(parsed.int >> 64 & ~(0xF << 12))  # ms and sub-ms fraction
    # Ordered by time (the fraction resolves 1/4096 ms): the ledger's index grows
    # at its end. The random tail keeps ids of the same instant apart.
    assert stamps == sorted(stamps)
    assert len({value[16:] for value in ids}) == len(ids)


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
