"""Fetch-once locks on SQLite: one holder per key across processes, none left by a holder that
is killed. (On PostgreSQL, lease rows: tests/test_cluster.py's fetch-once tests.)"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

import pytest

from mirror import keylocks
from tests.support.keylocks import held_elsewhere

pytestmark = pytest.mark.django_db(transaction=True)


def test_one_holder_per_key() -> None:
    ours = keylocks.acquire("a")
    assert ours is not None and keylocks.acquire("a") is None  # another thread of ours
    keylocks.release(ours)
    with held_elsewhere("a") as release:
        assert keylocks.acquire("a") is None
        mine = keylocks.acquire("b")  # another key: not held
        assert mine is not None
        release()
        ours = keylocks.acquire("a")
        assert ours is not None
    keylocks.release(ours)
    keylocks.release(mine)
    with held_elsewhere("b"):  # released: another process may take it
        pass


def test_a_killed_holder_leaves_no_lock() -> None:
    """A process that holds the lock and is killed (SIGKILL): the kernel lets it go."""
    held = keylocks._lock_path(), keylocks._name("k") % keylocks._OFFSETS
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(held[0]), str(held[1])],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        assert keylocks.acquire("k") is None
    finally:
        holder.kill()
        holder.wait()
    ours = keylocks.acquire("k")
    assert ours is not None
    keylocks.release(ours)


# Takes the byte lock of argv[2] on the file argv[1] as keylocks does, then sleeps.
_HOLD = textwrap.dedent(
    """
    import fcntl, os, struct, sys, time
    fd = os.open(sys.argv[1], os.O_RDWR)
    lock = struct.pack("hhqqi4x", fcntl.F_WRLCK, os.SEEK_SET, int(sys.argv[2]), 1, 0)
    fcntl.fcntl(fd, fcntl.F_OFD_SETLK, lock)
    print("held", flush=True)
    time.sleep(60)
    """
)


def test_a_forked_child_holds_none_of_its_parents_locks() -> None:
    """A worker forked while its parent holds a lock (a Celery or gunicorn master) starts
    with none: the parent's lock is someone else's to it, and free once the parent lets go."""
    ours = keylocks.acquire("f")
    assert ours is not None
    from_parent, to_child = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            held_elsewhere = keylocks.acquire("f") is None
            os.read(from_parent, 1)  # the parent let go
            code = 0 if held_elsewhere and keylocks.acquire("f") is not None else 2
        finally:
            os._exit(code)
    time.sleep(0.2)
    keylocks.release(ours)
    os.write(to_child, b"x")
    _, status = os.waitpid(pid, 0)
    os.close(from_parent)
    os.close(to_child)
    assert os.waitstatus_to_exitcode(status) == 0
