"""steadfast: messages over TCP that arrive exactly once, in order, across dropped
connections and reconnects, with a receipt for each one.

The Rust implementation, with every guarantee, for Python::

    import steadfast

    server = steadfast.Server(["127.0.0.1:0"])
    with steadfast.Client(server.addresses[0], name="alice") as client:
        receipt = client.send(b"hello")
        peer = server.accept(timeout=5)
        assert peer.recv(timeout=5).body == b"hello"
        receipt.wait(timeout=5)
    server.shutdown()

The asyncio API, with the same names as coroutines, is :mod:`steadfast.aio`.
"""

import os as _os

from ._errors import (
    BindFailed,
    Closed,
    ConfigError,
    ConnectionFailed,
    Error,
    Full,
    Refused,
    RequestError,
    SessionLost,
    StoreError,
    Timeout,
    TooLarge,
)
from ._rpc import pack, unpack
from ._metrics import enable_metrics, metrics_text
from ._steadfast import after_fork_in_child as _after_fork_in_child
from ._steadfast import Message, Receipt, __version__, set_wait_spin
from ._sync import Body, Client, Event, Handler, Peer, Server

__all__ = [
    "BindFailed",
    "Body",
    "Client",
    "Closed",
    "ConfigError",
    "ConnectionFailed",
    "Error",
    "Event",
    "Full",
    "Handler",
    "Message",
    "Peer",
    "Receipt",
    "Refused",
    "RequestError",
    "Server",
    "SessionLost",
    "StoreError",
    "Timeout",
    "TooLarge",
    "__version__",
    "enable_metrics",
    "metrics_text",
    "pack",
    "set_wait_spin",
    "unpack",
]

# A child of os.fork() (multiprocessing's default on Linux before Python 3.14) has none of the
# runtime's threads: new objects there start a runtime of their own, and the parent's objects
# refuse to act (their connections are the parent's) instead of hanging.
if hasattr(_os, "register_at_fork"):
    _os.register_at_fork(after_in_child=_after_fork_in_child)
