"""tinyproto's overridable hooks, with steadfast.

Mirrors tinyproto's README: subclass the library's classes and override the methods it calls
for you. tinyproto's ``TinyProtoConnection`` runs ``pre_loop`` once when a connection is
established, ``transmission_received(message)`` for each message, ``post_loop`` once when it
ends; ``TinyProtoServer`` runs ``loop_pass`` on every pass of its main loop and
``conn_shutdown`` whenever a connection closes.

With steadfast the hooks are the methods of a :class:`steadfast.Handler` subclass, passed as
``Server(..., handler=...)`` and called one at a time on the server's dispatch thread:

==========================  ==================================================
tinyproto                   steadfast.Handler
==========================  ==================================================
``pre_loop``                ``on_connect(peer)``: a new session
``transmission_received``   ``on_message(peer, message)``
``conn_shutdown``           ``on_disconnect(peer, error)``: a connection ended;
                            the session lingers, resumable
``post_loop``               ``on_session_end(peer, reason, unacknowledged)``
``loop_pass``               ``on_tick()``, every ``Server(..., tick=...)``
==========================  ==================================================

Two clients: one says hello and closes its session; the other runs in a child process that
is killed after sending, so the server sees its connection end (``on_disconnect``) and, once
the linger time passes without a resume, its session end (``on_session_end``) with the
messages the server sent it that it never took.

Run: ``python3 examples/tinyproto_hooks.py`` (exits 0 when everything checked out).
"""

from __future__ import annotations

import subprocess
import sys
import threading
from typing import Dict, List, Optional, Tuple

import steadfast

TIMEOUT = 5.0
TICK = 0.05
LINGER = 0.5


class Connection(steadfast.Handler):
    """The hooks: greet, echo, and note everything that happens, per client name."""

    def __init__(self) -> None:
        self.log: Dict[Optional[str], List[Tuple[object, ...]]] = {}
        self.ticks = 0
        self.ticked = threading.Event()
        self.crasher_sent = threading.Event()
        self.ended: Dict[Optional[str], threading.Event] = {
            "alice": threading.Event(),
            "crasher": threading.Event(),
        }

    def on_connect(self, peer: steadfast.Peer) -> None:  # pre_loop
        self.log.setdefault(peer.name, []).append(("connect",))
        peer.send(f"welcome {peer.name}")

    def on_message(self, peer: steadfast.Peer, message: steadfast.Message) -> None:
        # transmission_received: the message is taken (acknowledged) already.
        self.log[peer.name].append(("message", message.text()))
        peer.send(b"echo: " + message.body)
        if peer.name == "crasher":
            self.crasher_sent.set()

    def on_disconnect(self, peer: steadfast.Peer, error: str) -> None:  # conn_shutdown
        self.log[peer.name].append(("disconnect",))

    def on_session_end(
        self, peer: steadfast.Peer, reason: str, unacknowledged: List[steadfast.Message]
    ) -> None:  # post_loop
        self.log[peer.name].append(("end", reason, [m.text() for m in unacknowledged]))
        self.ended[peer.name].set()

    def on_tick(self) -> None:  # loop_pass
        self.ticks += 1
        if self.ticks >= 3:
            self.ticked.set()


def crashing_client(address: str) -> None:
    """The child process: sends one message, then waits to be killed (or for stdin to close)."""
    client = steadfast.Client(address, name="crasher", timeout=TIMEOUT)
    client.send("are you there?").wait(timeout=TIMEOUT)
    sys.stdin.read()


def main() -> None:
    hooks = Connection()
    server = steadfast.Server(["127.0.0.1:0"], handler=hooks, tick=TICK, linger=LINGER)
    address = server.addresses[0]
    child: Optional[subprocess.Popen[bytes]] = None
    try:
        # A client that talks and then closes its session.
        with steadfast.Client(address, name="alice", timeout=TIMEOUT) as alice:
            assert alice.recv(timeout=TIMEOUT).text() == "welcome alice"
            alice.send_many(["hello", "world"], timeout=TIMEOUT)
            assert alice.recv(timeout=TIMEOUT).text() == "echo: hello"
            assert alice.recv(timeout=TIMEOUT).text() == "echo: world"
            alice.close("bye")
        assert hooks.ended["alice"].wait(TIMEOUT)

        # A client that dies without closing: its connection ends, then its session.
        child = subprocess.Popen(
            [sys.executable, __file__, "--crashing-client", address], stdin=subprocess.PIPE
        )
        assert hooks.crasher_sent.wait(TIMEOUT), "the child client never sent"
        child.kill()
        child.wait(TIMEOUT)
        assert hooks.ended["crasher"].wait(LINGER + TIMEOUT)
        assert hooks.ticked.wait(TIMEOUT)
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait(TIMEOUT)
        server.shutdown()

    for name, events in hooks.log.items():
        print(f"{name}: {events}")
    print(f"ticks: {hooks.ticks}")
    assert hooks.log["alice"] == [
        ("connect",),
        ("message", "hello"),
        ("message", "world"),
        ("end", "session closed (Normal by peer): bye", []),
    ], hooks.log["alice"]
    assert hooks.log["crasher"] == [
        ("connect",),
        ("message", "are you there?"),
        ("disconnect",),
        # What the server sent it, never taken: handed back, nothing silently lost.
        ("end", "expired", ["welcome crasher", "echo: are you there?"]),
    ], hooks.log["crasher"]
    print("ok")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--crashing-client"]:
        crashing_client(sys.argv[2])
    else:
        main()
