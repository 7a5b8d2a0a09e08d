"""The asyncio API: the same names as :mod:`steadfast`, as coroutines.

::

    import asyncio, steadfast.aio as sf

    async def main() -> None:
        server = await sf.Server.bind(["127.0.0.1:0"])
        client = await sf.Client.connect(server.addresses[0], name="alice")
        receipt = await client.send(b"hello")
        peer = await server.accept(timeout=5)
        async for msg in peer:
            print(msg.body)
            break
        await receipt.wait(timeout=5)

    asyncio.run(main())

**Cancellation** is safe as in the Rust API: a ``recv`` cancelled before it returns took
nothing (the message stays for the next call), a ``send`` cancelled before it returns queued
nothing. The waiting is done by the runtime's threads, which only signal the event loop
(through a pipe it watches); messages are taken and queued by the coroutine itself, on the
loop's thread, after the wait. No Python code runs off the loop's thread.

Needs an event loop with ``add_reader`` (the default loop on Linux and macOS, uvloop).
"""

from __future__ import annotations

import asyncio
import os
import weakref
from typing import Any, AsyncIterator, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from . import _rpc
from ._base import PeerInfo
from ._errors import Closed, Full, RequestError
from ._steadfast import ClientCore, Completions, Message, Op, PeerCore, Receipt as _Receipt, ServerCore
from ._sync import Body

__all__ = ["Client", "Peer", "Receipt", "Server"]


class _Bridge:
    """One event loop's completions: the pipe it watches and the futures waiting."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.completions = Completions()
        self.waiting: Dict[int, asyncio.Future[None]] = {}
        fd = self.completions.fileno()
        os.set_blocking(fd, False)
        # The loop holds this bridge (through the reader) and the bridges' map holds the loop
        # weakly: once the loop is closed and gone, so are the bridge and its pipe.
        loop.add_reader(fd, self._ready)

    def _ready(self) -> None:
        try:
            os.read(self.completions.fileno(), 4096)
        except BlockingIOError:
            pass
        for id in self.completions.drain():
            fut = self.waiting.pop(id, None)
            if fut is not None and not fut.done():
                fut.set_result(None)


_bridges: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Bridge]" = weakref.WeakKeyDictionary()


def _bridge() -> _Bridge:
    loop = asyncio.get_running_loop()
    b = _bridges.get(loop)
    if b is None:
        b = _bridges[loop] = _Bridge(loop)
    return b


async def _run(start: Any, *args: Any, **kwargs: Any) -> Any:
    """Starts an operation (``start(completions, *args)``) and awaits its result. Cancelling
    stops the operation; what it waited for is left where it was."""
    b = _bridge()
    op: Op = start(b.completions, *args, **kwargs)
    fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    b.waiting[op.id] = fut
    try:
        await fut
    except BaseException:
        b.waiting.pop(op.id, None)
        op.cancel()
        raise
    return op.result()


def _left(deadline: Optional[float]) -> Optional[float]:
    if deadline is None:
        return None
    return max(0.0, deadline - asyncio.get_running_loop().time())


def _deadline(timeout: Optional[float]) -> Optional[float]:
    return None if timeout is None else asyncio.get_running_loop().time() + timeout


def _len(body: Body) -> int:
    return len(body.encode()) if isinstance(body, str) else len(memoryview(body).cast("B"))


class Receipt:
    """A message's receipt: ``await receipt.wait()`` until the peer's application took it."""

    __slots__ = ("_inner",)

    def __init__(self, inner: _Receipt) -> None:
        self._inner = inner

    @property
    def seq(self) -> int:
        return self._inner.seq

    @property
    def acknowledged(self) -> bool:
        return self._inner.acknowledged

    async def wait(self, timeout: Optional[float] = None) -> None:
        """Waits until the peer's application has taken the message; raises
        :class:`~steadfast.SessionLost` if the session ends first."""
        if self._inner.acknowledged:
            return
        await _run(self._inner.wait_op, timeout)

    def __await__(self) -> Any:
        return self.wait().__await__()

    def __repr__(self) -> str:
        return repr(self._inner)


class Peer(PeerInfo):
    """One session, for asyncio (see :class:`steadfast.Peer`)."""

    __slots__ = ("_held", "_next")

    def __init__(self, core: PeerCore) -> None:
        super().__init__(core)
        self._held: List[Message] = []
        self._next = 0

    def try_send(self, body: Body) -> Receipt:
        """Queues a message if the outbox has room now (:class:`~steadfast.Full` otherwise)."""
        return Receipt(self._core.try_send(body))

    async def send(self, body: Body, timeout: Optional[float] = None) -> Receipt:
        """Queues a message, waiting while the outbox is full. Cancelled, it queued nothing."""
        deadline = _deadline(timeout)
        while True:
            try:
                return Receipt(self._core.try_send(body))
            except Full:
                await _run(self._core.writable_op, _len(body), _left(deadline))

    async def send_many(self, bodies: Iterable[Body], timeout: Optional[float] = None) -> Optional[Receipt]:
        """Queues every body in order; the last one's receipt. Cancelled, a prefix of the
        bodies may be queued (each one queued is sent and acknowledged as usual)."""
        deadline = _deadline(timeout)
        last: Optional[Receipt] = None
        for body in bodies:
            last = await self.send(body, _left(deadline))
        return last

    async def send_value(self, value: Any, timeout: Optional[float] = None) -> Receipt:
        """Sends a Python value as MessagePack."""
        return await self.send(_rpc.pack(value), timeout)

    def try_recv(self) -> Optional[Message]:
        if self._held:
            return self._held.pop(0)
        return self._core.try_recv()

    async def recv(self, timeout: Optional[float] = None) -> Message:
        """Takes the next message, waiting for one. Cancelled, it took nothing."""
        if self._held:
            return self._held.pop(0)
        deadline = _deadline(timeout)
        while True:
            m = self._core.try_recv()
            if m is not None:
                return m
            if not await _run(self._core.readable_op, _left(deadline)):
                raise Closed("session ended")

    async def recv_many(self, n: int, timeout: Optional[float] = None) -> List[Message]:
        """Takes at least one message and up to ``n`` (partial read)."""
        if self._held:
            out = self._held[:n]
            del self._held[:n]
            return out
        deadline = _deadline(timeout)
        while True:
            got = self._core.try_recv_many(n)
            if got or n == 0:
                return got
            if not await _run(self._core.readable_op, _left(deadline)):
                raise Closed("session ended")

    def try_recv_many(self, n: int) -> List[Message]:
        """Takes up to ``n`` waiting messages without waiting."""
        out = self._held[:n]
        del self._held[:n]
        return out + self._core.try_recv_many(n - len(out)) if len(out) < n else out

    async def recv_value(self, timeout: Optional[float] = None) -> Any:
        return (await self.recv(timeout)).value()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.recv()
            except Closed:
                return

    async def flush(self, timeout: Optional[float] = None) -> None:
        """Waits until every message sent so far is acknowledged."""
        await _run(self._core.flush_op, timeout)

    async def close(self, reason: str = "closed", timeout: float = 5.0) -> str:
        """Ends the session after waiting up to ``timeout`` for what is queued."""
        return str(await _run(self._core.close_op, reason, timeout))

    async def request(self, route: str, value: Any, timeout: Optional[float] = None) -> Any:
        """As :meth:`steadfast.Peer.request`."""
        self._next += 1
        id = self._next
        await self.send(_rpc.envelope(_rpc.REQUEST, route, id, _rpc.pack(value)), timeout)
        deadline = _deadline(timeout)
        while True:
            try:
                m = await self.recv_direct(_left(deadline))
            except Closed:
                raise RequestError(f"session ended before the reply to {route!r}") from None
            found, value = _rpc.reply_to(m.body, id, route)
            if found:
                return value
            if found is None:
                self._held.append(m)

    async def recv_direct(self, timeout: Optional[float]) -> Message:
        deadline = _deadline(timeout)
        while True:
            m = self._core.try_recv()
            if m is not None:
                return m
            if not await _run(self._core.readable_op, _left(deadline)):
                raise Closed("session ended")


_peers: "weakref.WeakValueDictionary[Tuple[str, str], Peer]" = weakref.WeakValueDictionary()


def _peer(core: PeerCore, side: str = "server") -> Peer:
    """The one `Peer` object of a session on this side while anything refers to it (see
    `steadfast._sync._peer`). Only the loop's thread makes them: no lock."""
    id = core.id
    if id is None:
        return Peer(core)
    p = _peers.get((side, id))
    if p is None:
        p = _peers[(side, id)] = Peer(core)
    return p


class Client(Peer):
    """A client's session, for asyncio: ``client = await Client.connect(address, ...)``
    (the arguments of :class:`steadfast.Client`)."""

    __slots__ = ("_client",)

    def __init__(self, core: ClientCore) -> None:
        super().__init__(core.peer)
        self._client = core
        if self.id is not None:
            _peers[("client", self.id)] = self

    @classmethod
    async def connect(
        cls,
        address: Union[str, Sequence[str]],
        *,
        name: Optional[str] = None,
        token: Optional[Body] = None,
        tls: Union[str, bool, None] = None,
        server_name: Optional[str] = None,
        state: Optional[str] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Client:
        addresses = [address] if isinstance(address, str) else list(address)
        core = await _run(
            ClientCore.connect_op,
            addresses,
            name=name,
            token=token,
            tls_ca=tls if isinstance(tls, str) else None,
            tls=tls is True,
            server_name=server_name,
            state=state,
            max_attempts=max_attempts,
            timeout=timeout,
        )
        return cls(core)

    async def __aenter__(self) -> Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if not self.ended:
            await self.close()


class Server:
    """A listening server, for asyncio: ``server = await Server.bind(addresses, ...)`` (the
    arguments of :class:`steadfast.Server`, without ``handler``)."""

    def __init__(self, core: ServerCore) -> None:
        self._core = core

    @classmethod
    async def bind(
        cls,
        addresses: Sequence[str] = ("127.0.0.1:0",),
        *,
        tls: Optional[Tuple[str, str]] = None,
        state: Optional[str] = None,
        node: Optional[str] = None,
        token: Optional[Body] = None,
        linger: Optional[float] = None,
    ) -> Server:
        if isinstance(addresses, str):
            addresses = [addresses]
        loop = asyncio.get_running_loop()
        core = await loop.run_in_executor(
            None,
            lambda: ServerCore.bind(
                list(addresses),
                tls_cert=tls[0] if tls else None,
                tls_key=tls[1] if tls else None,
                state=state,
                node=node,
                token=token,
                linger=linger,
            ),
        )
        return cls(core)

    @property
    def addresses(self) -> List[str]:
        return self._core.addresses

    async def accept(self, timeout: Optional[float] = None) -> Peer:
        """The next new session. Cancelled, it accepted nothing: a session that arrived as it
        was cancelled is the next ``accept``'s."""
        return _peer(await _run(self._core.accept_op, timeout))

    def peers(self) -> List[Peer]:
        return [_peer(c) for c in self._core.peers()]

    def next_event(self) -> Optional[Tuple[str, Peer, Optional[str], List[Message]]]:
        """The next event if one is waiting (never waits): ``(kind, peer, detail,
        unacknowledged)`` as :class:`steadfast.Event`, with an asyncio :class:`Peer`."""
        e = self._core.next_event(0.0)
        if e is None:
            return None
        kind, core, detail, unacked = e
        return (kind, _peer(core), detail, unacked)

    async def shutdown(self, drain: float = 1.0) -> List[Tuple[Peer, List[Message]]]:
        loop = asyncio.get_running_loop()
        left = await loop.run_in_executor(None, self._core.shutdown, drain)
        return [(_peer(c), m) for c, m in left]

    async def __aenter__(self) -> Server:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()
