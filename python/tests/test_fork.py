"""``os.fork`` (multiprocessing's default start method on Linux before Python 3.14): a child
makes and uses objects of its own; the parent's objects refuse to act in the child instead
of hanging or writing into the parent's connections; the parent carries on untouched."""

from __future__ import annotations

import os
import signal

import pytest

import steadfast


def child(server_addr: str, inherited: steadfast.Client) -> str:
    """What the child saw, as one line."""
    try:
        inherited.send(b"from the child, through the parent's client")
    except steadfast.Error as e:
        if "fork" not in str(e):
            return f"unexpected error: {e!r}"
    else:
        return "the parent's client sent from the child"
    try:
        with steadfast.Client(server_addr, name="child", timeout=10) as own:
            own.send(b"from the child").wait(timeout=10)
    except steadfast.Error as e:
        return f"the child's own client failed: {e!r}"
    return "ok"


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no os.fork on this platform")
def test_fork_child_uses_its_own_objects_and_refuses_the_parents() -> None:
    server = steadfast.Server(["127.0.0.1:0"])
    addr = server.addresses[0]
    try:
        parent = steadfast.Client(addr, name="parent")
        mine = server.accept(timeout=5)
        parent.send(b"before the fork")
        assert mine.recv(timeout=5).body == b"before the fork"

        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: report, then leave without running the parent's cleanup
            try:
                os.write(w, child(addr, parent).encode()[:4000])
            finally:
                os._exit(0)
        os.close(w)
        try:
            # The child's session arrives at the parent's server, its message with it.
            theirs = server.accept(timeout=15)
            assert theirs.name == "child"
            assert theirs.recv(timeout=15).body == b"from the child"
            with os.fdopen(r, "rb") as f:
                said = f.read().decode()
            _, status = os.waitpid(pid, 0)
            pid = 0
            assert said == "ok", said
            assert os.waitstatus_to_exitcode(status) == 0
        finally:
            if pid:  # a child that did not finish is stopped by its PID
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)

        # The parent's own session is intact: nothing of the child's went into it.
        receipt = parent.send(b"after the fork")
        assert mine.recv(timeout=5).body == b"after the fork"
        receipt.wait(timeout=5)
        assert mine.try_recv() is None
        parent.close(timeout=1)
    finally:
        server.shutdown(drain=0.0)
