"""The blocking API: :class:`Peer`, :class:`Client`, :class:`Server` and :class:`Handler`.

Every call that waits releases the GIL, so other Python threads run meanwhile, and takes
``timeout=`` in seconds (``None``: no limit), raising :class:`~steadfast.Timeout` when it
runs out (having taken or queued nothing).
"""

from __future__ import annotations

import itertools
import threading
import weakref
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import (
    Any,
    Callable,
    Deque,
    Dict,
    Iterable,
    Iterator,
    List,
    NamedTuple,
    Optional,
    Sequence,
    Set,
    Tuple,
    Union,
)

from . import _rpc
from ._base import PeerInfo
from ._errors import Closed, RequestError, SessionLost
from ._steadfast import ClientCore, Message, PeerCore, Receipt, ServerCore

#: What a message body may be: ``str`` goes as UTF-8.
Body = Union[bytes, bytearray, memoryview, str]

#: A route's handler: takes the request's value (and the peer), returns the reply's value.
RouteHandler = Callable[..., Any]


class Peer(PeerInfo):
    """One session: send to the other side and receive from it, exactly once and in order,
    across connection losses. Taking a message (``recv``) acknowledges it to the sender.

    Handles compare equal when they name the same session; any number of threads may use one.
    """

    __slots__ = ("_held", "_ids")

    def __init__(self, core: PeerCore) -> None:
        super().__init__(core)
        # Messages a `request` read while it waited for its reply: the next `recv` gets them.
        self._held: Deque[Message] = deque()
        self._ids = itertools.count(1)

    # -- sending --------------------------------------------------------------------------

    def send(self, body: Body, timeout: Optional[float] = None) -> Receipt:
        """Queues a message; waits only while the outbox is full. Its receipt resolves when
        the peer's application has taken it."""
        return self._core.send(body, timeout)

    def try_send(self, body: Body) -> Receipt:
        """Queues a message if the outbox has room now; raises :class:`~steadfast.Full`
        otherwise (nothing queued)."""
        return self._core.try_send(body)

    def send_many(self, bodies: Iterable[Body], timeout: Optional[float] = None) -> Optional[Receipt]:
        """Queues every body, in order, in one call; returns the last one's receipt (receipts
        are cumulative), ``None`` for no bodies. If it times out (or is interrupted) while
        waiting for room, the bodies before that point are queued and will be delivered
        (``stats()["queued"]`` counts them); the rest are not."""
        return self._core.send_many(bodies, timeout)

    def send_value(self, value: Any, timeout: Optional[float] = None) -> Receipt:
        """Sends a Python value (dicts, lists, str, bytes, numbers, ...) as MessagePack."""
        return self._core.send(_rpc.pack(value), timeout)

    def flush(self, timeout: Optional[float] = None) -> None:
        """Waits until every message sent so far is acknowledged (taken by the peer)."""
        self._core.flush(timeout)

    # -- receiving ------------------------------------------------------------------------

    def recv(self, timeout: Optional[float] = None) -> Message:
        """Takes the next message, waiting for one. Raises :class:`~steadfast.Closed` once
        the session is over and everything was read."""
        if self._held:
            return self._held.popleft()
        return self._core.recv(timeout)

    def try_recv(self) -> Optional[Message]:
        """Takes the next message if one is waiting."""
        if self._held:
            return self._held.popleft()
        return self._core.try_recv()

    def recv_many(self, n: int, timeout: Optional[float] = None) -> List[Message]:
        """Takes at least one message (waiting for it) and up to ``n``: a partial read, the
        rest stay queued for the next call."""
        if self._held:
            out = [self._held.popleft() for _ in range(min(n, len(self._held)))]
            return out + self._core.try_recv_many(n - len(out))
        return self._core.recv_many(n, timeout)

    def try_recv_many(self, n: int) -> List[Message]:
        """Takes up to ``n`` waiting messages without waiting (an empty list: none)."""
        out = [self._held.popleft() for _ in range(min(n, len(self._held)))]
        return out + self._core.try_recv_many(n - len(out)) if len(out) < n else out

    def recv_value(self, timeout: Optional[float] = None) -> Any:
        """Takes the next message and decodes it from MessagePack."""
        return self.recv(timeout).value()

    def __iter__(self) -> Iterator[Message]:
        return self

    def __next__(self) -> Message:
        try:
            return self.recv()
        except Closed:
            raise StopIteration from None

    # -- requests -------------------------------------------------------------------------

    def request(self, route: str, value: Any, timeout: Optional[float] = None) -> Any:
        """Sends ``value`` to the other side's handler of ``route`` and returns its reply's
        value. The other side is a :class:`Server` with that route (or a Rust
        ``steadfast::rpc::Rpc``). Messages that arrive meanwhile are kept for ``recv``.

        Raises :class:`~steadfast.RequestError` when the handler failed or the route is
        unknown, :class:`~steadfast.Timeout` when no reply came in time.
        """
        id = next(self._ids)
        self._core.send(_rpc.envelope(_rpc.REQUEST, route, id, _rpc.pack(value)), timeout)
        deadline = None if timeout is None else _now() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - _now())
            try:
                m = self._core.recv(left)
            except Closed:
                raise RequestError(f"session ended before the reply to {route!r}") from None
            found, value = _rpc.reply_to(m.body, id, route)
            if found:
                return value
            if found is None:
                self._held.append(m)

    def notify(self, route: str, value: Any, timeout: Optional[float] = None) -> Receipt:
        """Sends ``value`` to the other side's handler of ``route``, expecting no reply."""
        return self._core.send(_rpc.envelope(_rpc.MESSAGE, route, 0, _rpc.pack(value)), timeout)

    # -- the end --------------------------------------------------------------------------

    def ping(self, timeout: Optional[float] = None) -> float:
        """The round-trip time of a PING, in seconds."""
        return self._core.ping(timeout)

    def close(self, reason: str = "closed", timeout: float = 5.0) -> str:
        """Ends the session (both sides learn it), first waiting up to ``timeout`` for what is
        queued to be acknowledged; returns why it ended."""
        return self._core.close(reason, timeout)


# The one `Peer` object of each session on this side while anything refers to it, so that
# messages a `request` reads while it waits (kept for `recv`) are seen by every handle.
_peers: "weakref.WeakValueDictionary[Tuple[str, str], Peer]" = weakref.WeakValueDictionary()
_peers_lock = threading.Lock()


def _peer(core: PeerCore, side: str = "server") -> Peer:
    id = core.id
    if id is None:
        return Peer(core)
    with _peers_lock:
        p = _peers.get((side, id))
        if p is None:
            p = Peer(core)
            _peers[(side, id)] = p
        return p


def _now() -> float:
    import time

    return time.monotonic()


class Client(Peer):
    """A client's session with a server: a :class:`Peer` that reconnects by itself (jittered
    backoff) and resumes after every connection loss, resending exactly what the server lacks.

    ``address``: ``"host:port"`` or several (tried in order). ``tls``: a CA file (PEM) to
    trust, or ``True`` for the system's roots. ``state``: a directory that keeps the session
    (and its unacknowledged messages) across a restart of this process. ``token``: the
    server's shared token.
    """

    __slots__ = ("_client",)

    def __init__(
        self,
        address: Union[str, Sequence[str]],
        *,
        name: Optional[str] = None,
        token: Optional[Body] = None,
        tls: Union[str, bool, None] = None,
        server_name: Optional[str] = None,
        state: Optional[str] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> None:
        addresses = [address] if isinstance(address, str) else list(address)
        self._client = ClientCore.connect(
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
        super().__init__(self._client.peer)
        if self.id is not None:
            with _peers_lock:
                _peers[("client", self.id)] = self

    def next_event(self, timeout: Optional[float] = 0.0) -> Optional[Tuple[Any, ...]]:
        """The next connection event, ``None`` if none came within ``timeout``: a tuple
        whose first item is ``"connected"``, ``"resumed"``, ``"disconnected"``,
        ``"reconnecting"`` or ``"session_lost"`` (then the reason and the unacknowledged
        messages)."""
        return self._client.next_event(timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.ended:
            self.close()


class Event(NamedTuple):
    """A server event: ``kind`` is ``"connected"``, ``"resumed"``, ``"disconnected"``,
    ``"ended"`` or ``"messages"`` (the peer has messages waiting)."""

    kind: str
    peer: Peer
    #: Why (for ``"disconnected"`` and ``"ended"``).
    detail: Optional[str]
    #: The messages sent to the peer and never acknowledged (``"ended"``).
    unacknowledged: List[Message]


class Handler:
    """Hooks for a :class:`Server` (``Server(..., handler=MyHandler())``), called one at a
    time on the server's dispatch thread. Override what you need; the defaults do nothing.
    A hook that raises is reported on stderr and the server goes on."""

    def on_connect(self, peer: Peer) -> None:
        """A client started a new session."""

    def on_resume(self, peer: Peer) -> None:
        """A client resumed its session on a new connection."""

    def on_message(self, peer: Peer, message: Message) -> None:
        """A message arrived (it is taken, and so acknowledged, before this is called)."""

    def on_disconnect(self, peer: Peer, error: str) -> None:
        """A connection ended; the session lingers and the client may resume it."""

    def on_session_end(self, peer: Peer, reason: str, unacknowledged: List[Message]) -> None:
        """The session is over (closed, expired, kicked); ``unacknowledged`` are the
        messages sent to it that it never took."""

    def on_tick(self) -> None:
        """Called every ``tick`` seconds (``Server(..., tick=...)``)."""


class Server:
    """Listens for clients and holds their sessions.

    ``tls``: ``(certificate_file, key_file)`` (PEM). ``state``: a directory (sessions survive
    a restart of this process) or ``"postgres://..."`` (sessions shared by a fleet of
    servers; ``node`` names this one). ``token``: the shared token clients must present.
    ``handler``: a :class:`Handler` whose hooks run on a dispatch thread.
    """

    def __init__(
        self,
        addresses: Sequence[str] = ("127.0.0.1:0",),
        *,
        tls: Optional[Tuple[str, str]] = None,
        state: Optional[str] = None,
        node: Optional[str] = None,
        token: Optional[Body] = None,
        linger: Optional[float] = None,
        handler: Optional[Handler] = None,
        tick: float = 1.0,
        workers: int = 8,
    ) -> None:
        if isinstance(addresses, str):
            addresses = [addresses]
        self._core = ServerCore.bind(
            list(addresses),
            tls_cert=tls[0] if tls else None,
            tls_key=tls[1] if tls else None,
            state=state,
            node=node,
            token=token,
            linger=linger,
        )
        self._handler = handler
        self._tick = tick
        self._routes: Dict[str, RouteHandler] = {}
        self._workers = workers
        self._pool: Optional[ThreadPoolExecutor] = None
        # Requests being handled, bounded: at the bound the dispatch thread waits for one to
        # finish (the requests behind stay in their sessions, unacknowledged: backpressure).
        self._in_flight = threading.BoundedSemaphore(workers * 8)
        self._thread: Optional[threading.Thread] = None
        self._closed = False
        if handler is not None:
            self._start()

    @property
    def addresses(self) -> List[str]:
        """The addresses it listens on (with the OS's ports for port 0)."""
        return self._core.addresses

    @property
    def connections(self) -> int:
        """Live connections now."""
        return self._core.connections

    def stats(self) -> Dict[str, int]:
        """The server's gauges: ``connections`` (handshakes included), ``handshakes``,
        ``sessions`` (live and lingering) and ``queued_bytes`` (against the memory budget)."""
        return self._core.stats()

    def accept(self, timeout: Optional[float] = None) -> Peer:
        """The next new session, waiting for one."""
        return _peer(self._core.accept(timeout))

    def next_event(self, timeout: Optional[float] = None) -> Optional[Event]:
        """The next event, ``None`` if none came within ``timeout``. Events are never dropped:
        unread ones wait (bounded by the server's session limit)."""
        e = self._core.next_event(timeout)
        if e is None:
            return None
        kind, core, detail, unacked = e
        return Event(kind, _peer(core), detail, unacked)

    def events(self) -> Iterator[Event]:
        """Every event, waiting for each, until the server shuts down."""
        while True:
            try:
                e = self.next_event()
            except Closed:
                return
            if e is not None:
                yield e

    def peers(self) -> List[Peer]:
        """Every live or lingering session."""
        return [_peer(c) for c in self._core.peers()]

    def kick(self, peer: Union[Peer, str], reason: str = "kicked") -> bool:
        """Ends a session; ``False`` if there is no such session."""
        id = peer.id if isinstance(peer, Peer) else peer
        return id is not None and self._core.kick(id, reason)

    def route(self, name: str) -> Callable[[RouteHandler], RouteHandler]:
        """Registers the decorated function as the handler of requests to ``name``
        (``peer.request(name, value)`` on the other side). It is called with the request's
        value (and, if it takes two arguments, the :class:`Peer` first) on a worker thread;
        what it returns is the reply, what it raises comes back as
        :class:`~steadfast.RequestError`.

        With a route, every message this server receives is a request or a one-way message
        to a route (as ``steadfast::rpc`` in Rust)."""

        def register(f: RouteHandler) -> RouteHandler:
            self._routes[name] = f
            if self._thread is None:
                self._start()
            return f

        return register

    def shutdown(self, drain: float = 1.0) -> List[Tuple[Peer, List[Message]]]:
        """Stops listening and ends every session (waiting up to ``drain`` seconds for what
        is queued to be acknowledged); returns what each peer never acknowledged."""
        if self._closed:
            return []
        self._closed = True
        left = self._core.shutdown(drain)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        return [(_peer(c), msgs) for c, msgs in left]

    close = shutdown

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()

    # -- the dispatch thread --------------------------------------------------------------

    def _start(self) -> None:
        self._pool = ThreadPoolExecutor(self._workers, thread_name_prefix="steadfast-route")
        self._thread = threading.Thread(target=self._dispatch, name="steadfast-dispatch", daemon=True)
        self._thread.start()

    def _dispatch(self) -> None:
        h = self._handler
        next_tick = _now() + self._tick
        # Peers with messages left after a batch, served in turn: a peer that sends without
        # pause gets one batch per turn and cannot keep the others waiting.
        turns: Deque[Peer] = deque()
        queued: Set[Peer] = set()
        while True:
            if turns:
                left: Optional[float] = 0.0
            elif h is not None:
                left = max(0.0, next_tick - _now())
            else:
                left = None
            try:
                e = self._core.next_event(left)
            except Closed:
                return
            if h is not None and _now() >= next_tick:
                next_tick = _now() + self._tick
                _guard(h.on_tick)
            if e is not None:
                kind, core, detail, unacked = e
                peer = _peer(core)
                if kind == "messages":
                    if peer not in queued:
                        queued.add(peer)
                        turns.append(peer)
                elif kind == "ended":
                    # Messages that arrived before the end are the application's still (a
                    # bounded inbox: the session takes no more).
                    while self._batch(peer):
                        pass
                    if h is not None:
                        _guard(h.on_session_end, peer, detail or "", unacked)
                elif h is None:
                    pass
                elif kind == "connected":
                    _guard(h.on_connect, peer)
                elif kind == "resumed":
                    _guard(h.on_resume, peer)
                elif kind == "disconnected":
                    _guard(h.on_disconnect, peer, detail or "")
            # One batch per turn, after every event as well, so a stream of events cannot
            # keep the messages waiting either.
            if turns:
                peer = turns.popleft()
                if self._batch(peer):
                    turns.append(peer)
                else:
                    queued.discard(peer)

    def _batch(self, peer: Peer) -> bool:
        """Handles up to one batch of the peer's messages; whether it may have more."""
        try:
            batch = peer.try_recv_many(_BATCH)
        except Closed:
            return False
        for m in batch:
            if self._routes:
                self._route(peer, m)
            elif self._handler is not None:
                _guard(self._handler.on_message, peer, m)
        return len(batch) == _BATCH

    def _route(self, peer: Peer, m: Message) -> None:
        env = _rpc.open_envelope(m.body)
        if env is None or env.kind not in (_rpc.MESSAGE, _rpc.REQUEST):
            return
        f = self._routes.get(env.route)
        if f is None:
            if env.kind == _rpc.REQUEST:
                _reply(peer, env.id, None, _rpc.UNKNOWN_ROUTE)
            return
        if env.kind == _rpc.MESSAGE:
            _guard(_call, f, peer, _rpc.unpack(env.payload))
            return
        pool = self._pool
        assert pool is not None
        self._in_flight.acquire()
        done = pool.submit(_serve_request, f, peer, env)
        done.add_done_callback(lambda _: self._in_flight.release())


#: Messages the dispatch thread takes from one peer per turn.
_BATCH = 64


def _call(f: RouteHandler, peer: Peer, value: Any) -> Any:
    import inspect

    try:
        n = len(inspect.signature(f).parameters)
    except (TypeError, ValueError):
        n = 1
    return f(peer, value) if n >= 2 else f(value)


def _serve_request(f: RouteHandler, peer: Peer, env: _rpc.Envelope) -> None:
    try:
        value = _call(f, peer, _rpc.unpack(env.payload))
    except Exception as e:  # the handler's error goes back to the requester
        _reply(peer, env.id, None, f"{type(e).__name__}: {e}")
        return
    _reply(peer, env.id, value, None)


def _reply(peer: Peer, id: int, value: Any, error: Optional[str]) -> None:
    if error is None:
        body = _rpc.envelope(_rpc.REPLY, "", id, _rpc.pack(value))
    else:
        body = _rpc.envelope(_rpc.ERROR_REPLY, "", id, _rpc.pack(error))
    try:
        peer._core.send(body, None)
    except (Closed, SessionLost):
        pass  # the session ended: the requester learns it from its own side
    except Exception as e:  # e.g. a reply too large: say so rather than stay silent
        try:
            peer._core.send(_rpc.envelope(_rpc.ERROR_REPLY, "", id, _rpc.pack(str(e))), None)
        except Exception:
            pass


def _guard(f: Callable[..., Any], *args: Any) -> None:
    try:
        f(*args)
    except Exception:
        import traceback

        traceback.print_exc()


__all__ = ["Body", "Client", "Event", "Handler", "Peer", "Server"]
