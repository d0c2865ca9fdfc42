"""Ids made on the request path (request ids, history row uids): unique, in a forked worker too."""

from __future__ import annotations

import os
import re
import uuid

from hydrodiag.ids import UniqueIds, unique_ids


def test_ids_are_unique_hex_and_uuid_shaped() -> None:
    made = [unique_ids.hex() for _ in range(10_000)]
    assert len(set(made)) == len(made) and all(re.fullmatch(r"[0-9a-f]{32}", h) for h in made)
    shaped = unique_ids.uuid_shaped()
    assert uuid.UUID(shaped).hex == shaped.replace("-", "")


def test_a_forked_process_does_not_repeat_the_parents_ids() -> None:
    ids = UniqueIds()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what it would hand out next
        os.write(write, ",".join(ids.hex() for _ in range(100)).encode())
        os._exit(0)
    os.close(write)
    child = os.read(read, 1 << 16).decode().split(",")
    os.waitpid(pid, 0)
    parent = [ids.hex() for _ in range(100)]
    assert len(child) == 100 and not set(child) & set(parent)
    assert {c[:16] for c in child} != {p[:16] for p in parent}
