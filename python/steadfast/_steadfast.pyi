"""Type stubs of the native module ``steadfast._steadfast`` (Rust, PyO3; python/src/*.rs).

Nothing here is meant to be used directly: :mod:`steadfast` and :mod:`steadfast.aio` wrap
these classes. None of them can be subclassed, and only :class:`Completions` can be
constructed from Python; the others come from the module's own calls.
"""

from typing import Any, Dict, Iterable, List, Literal, Optional, Sequence, Tuple, Union, final

from typing_extensions import Buffer, TypeAlias

__all__ = [
    "Message",
    "Receipt",
    "PeerCore",
    "ClientCore",
    "ServerCore",
    "Completions",
    "Op",
    "__version__",
    "after_fork_in_child",
    "enable_metrics",
    "render_metrics",
    "set_wait_spin",
]

__version__: str

def after_fork_in_child() -> None:
    """Registered with ``os.register_at_fork``: in the child, new objects start a runtime of
    their own and the parent's refuse to act (:class:`steadfast.Error`)."""

def enable_metrics(node: Optional[str] = None) -> None:
    """Installs the process's Prometheus recorder: from then on every server of the process
    counts into it (messages, bytes, connections, sessions, resumes, refusals, round-trip
    times: the series ``steadfast serve --metrics`` shows). ``node`` labels every series
    (``node="NAME"``). Calling it again does nothing. Raises :class:`steadfast.ConfigError`
    if another recorder is installed in the process."""

def set_wait_spin(microseconds: int) -> None:
    """How long every blocking wait of the process (``recv``, a receipt, ``accept``, …) polls
    for its result, yielding the CPU, before it sleeps. Default 0: it sleeps at once.

    Polling saves a thread wake-up, tens of microseconds on an idle virtual machine: 50 µs
    gave request/response p50 −15 to −25 % there, for +40 % CPU per round trip. On a machine
    whose CPUs are busy with other work the yielding thread may get its CPU back only a
    scheduler slice later: p99 3.6–5.0 ms against 0.11–0.23 ms without. Worth it only on
    CPUs of its own. At most 1,000,000; raises ``ValueError`` above, ``OverflowError`` below
    0."""

def render_metrics() -> str:
    """The metrics in Prometheus's text exposition format (0.0.4) (see
    :func:`steadfast.metrics_text`). Raises :class:`steadfast.ConfigError` before
    :func:`enable_metrics`."""

#: A message body or token: ``bytes``, ``bytearray``, ``memoryview`` (any buffer) or ``str``
#: (sent as UTF-8).
_Body: TypeAlias = Union[Buffer, str]

#: ``ClientCore.next_event``: the event's name first, then its details.
_ClientEvent: TypeAlias = Union[
    Tuple[Literal["connected"]],
    Tuple[Literal["resumed"]],
    Tuple[Literal["disconnected"], str],
    Tuple[Literal["reconnecting"], int, float],
    Tuple[Literal["session_lost"], str, List[Message]],
    Tuple[Literal["other"]],
]

#: ``ServerCore.next_event``: ``(kind, peer, detail, unacknowledged)``; ``detail`` is set for
#: ``"disconnected"`` and ``"ended"``, ``unacknowledged`` only for ``"ended"``.
_ServerEvent: TypeAlias = Tuple[
    Literal["connected", "resumed", "disconnected", "ended", "messages"],
    PeerCore,
    Optional[str],
    List[Message],
]

@final
class Message:
    """A message received from the peer: its body and its sequence number in the session.

    A body of 512 B to 8 KiB may share its memory with the bodies received just before and
    after it (at most 16 times its size and 32 KiB): keeping the ``Message`` itself for long
    keeps that much alive. ``body`` is a copy of its own; keep that instead.
    """

    @property
    def body(self) -> bytes:
        """The body, as sent."""
    @property
    def seq(self) -> int:
        """Sequence number in its direction of the session (consecutive from 1)."""
    @property
    def timestamp_us(self) -> int:
        """The sender's clock at ``send``, microseconds since the Unix epoch (0: not given)."""
    def text(self) -> str:
        """The body decoded as text (UTF-8)."""
    def value(self) -> Any:
        """The body decoded from MessagePack."""
    def __len__(self) -> int: ...

@final
class Receipt:
    """A message's receipt: resolves when the peer's application has taken the message."""

    @property
    def seq(self) -> int:
        """The message's sequence number."""
    @property
    def acknowledged(self) -> bool:
        """Whether the peer's application has taken the message already."""
    def wait(self, timeout: Optional[float] = None) -> None:
        """Waits (GIL released) until the message is acknowledged; ``SessionLost`` if the
        session ends first, ``Timeout`` when ``timeout`` runs out."""
    def wait_op(self, completions: Completions, timeout: Optional[float] = None) -> Op:
        """``wait`` as an event-loop operation; its result is ``None``."""

@final
class PeerCore:
    """One session's handle (wrapped by ``steadfast.Peer``)."""

    @property
    def id(self) -> Optional[str]:
        """The session's id, once established: 16 hex digits (the first 64 of its 128 bits)."""
    @property
    def name(self) -> Optional[str]:
        """The client's name, if it gave one."""
    @property
    def addr(self) -> Optional[str]:
        """The address of the current connection's other end."""
    @property
    def connected(self) -> bool:
        """A connection carries the session now."""
    @property
    def ended(self) -> bool:
        """The session is over."""
    @property
    def end_reason(self) -> Optional[str]:
        """Why the session ended, once it has."""
    @property
    def next_seq(self) -> Optional[int]:
        """The sequence number the next message sent will carry."""
    def send(self, body: _Body, timeout: Optional[float] = None) -> Receipt:
        """Queues a message, waiting (GIL released) only while the outbox is full."""
    def try_send(self, body: _Body) -> Receipt:
        """Queues a message if the outbox has room now (``Full`` otherwise)."""
    def send_many(self, bodies: Iterable[_Body], timeout: Optional[float] = None) -> Optional[Receipt]:
        """Queues every body in order; the last one's receipt (``None`` for no bodies)."""
    def recv(self, timeout: Optional[float] = None) -> Message:
        """Takes the next message, waiting for one (``Closed`` once the session is over)."""
    def try_recv(self) -> Optional[Message]:
        """Takes the next message if one is waiting."""
    def recv_many(self, n: int, timeout: Optional[float] = None) -> List[Message]:
        """Takes at least one message, waiting for it, and up to ``n`` (none for ``n == 0``)."""
    def try_recv_many(self, n: int) -> List[Message]:
        """Takes up to ``n`` waiting messages without waiting."""
    def flush(self, timeout: Optional[float] = None) -> None:
        """Waits until every message sent so far is acknowledged."""
    def close(self, reason: str = "closed", timeout: float = 5.0) -> str:
        """Closes the session, first waiting up to ``timeout`` for what is queued; returns
        why it ended."""
    def ping(self, timeout: Optional[float] = None) -> float:
        """Round-trip time of a PING, in seconds."""
    def unacknowledged(self) -> List[Message]:
        """Copies of the messages sent and not acknowledged yet, in order."""
    def stats(self) -> Dict[str, Optional[float]]:
        """The session's counters: ints, and ``rtt`` in seconds (``None`` before a sample)."""
    def readable_op(self, completions: Completions, timeout: Optional[float] = None) -> Op:
        """An operation whose result is ``True`` once a message can be taken, ``False`` once
        the session is over with nothing left. Takes nothing."""
    def writable_op(self, completions: Completions, len: int, timeout: Optional[float] = None) -> Op:
        """An operation that completes (result ``None``) once a body of ``len`` bytes fits
        the outbox. Queues nothing."""
    def flush_op(self, completions: Completions, timeout: Optional[float] = None) -> Op:
        """``flush`` as an event-loop operation; its result is ``None``."""
    def close_op(self, completions: Completions, reason: str = "closed", timeout: float = 5.0) -> Op:
        """``close`` as an event-loop operation; its result is the end reason (``str``)."""
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class ClientCore:
    """A connected client (wrapped by ``steadfast.Client``)."""

    @staticmethod
    def connect(
        addresses: Sequence[str],
        *,
        name: Optional[str] = None,
        token: Optional[_Body] = None,
        tls_ca: Optional[str] = None,
        tls: bool = False,
        server_name: Optional[str] = None,
        state: Optional[str] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> ClientCore:
        """Connects (GIL released) to the first of ``addresses`` that answers."""
    @staticmethod
    def connect_op(
        completions: Completions,
        addresses: Sequence[str],
        *,
        name: Optional[str] = None,
        token: Optional[_Body] = None,
        tls_ca: Optional[str] = None,
        tls: bool = False,
        server_name: Optional[str] = None,
        state: Optional[str] = None,
        max_attempts: Optional[int] = None,
        timeout: Optional[float] = None,
    ) -> Op:
        """``connect`` as an event-loop operation; its result is a :class:`ClientCore`."""
    @property
    def peer(self) -> PeerCore:
        """The session's handle."""
    def next_event(self, timeout: Optional[float] = 0.0) -> Optional[_ClientEvent]:
        """The next connection event, ``None`` if none came within ``timeout``."""

@final
class ServerCore:
    """A listening server (wrapped by ``steadfast.Server``)."""

    @staticmethod
    def bind(
        addresses: Sequence[str],
        *,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        state: Optional[str] = None,
        node: Optional[str] = None,
        token: Optional[_Body] = None,
        linger: Optional[float] = None,
    ) -> ServerCore:
        """Listens on every address (``host:port``, port 0 for any)."""
    @property
    def addresses(self) -> List[str]:
        """The addresses it listens on (the OS's ports for port 0)."""
    @property
    def connections(self) -> int:
        """Live connections now."""
    def accept(self, timeout: Optional[float] = None) -> PeerCore:
        """The next new session, waiting up to ``timeout`` (``Closed`` after shutdown)."""
    def record_gauges(self) -> None:
        """Sets the process's gauges (sessions, outbox, memory budget) from this server."""
    def accept_op(self, completions: Completions, timeout: Optional[float] = None) -> Op:
        """``accept`` as an event-loop operation; its result is a :class:`PeerCore`."""
    def next_event(self, timeout: Optional[float] = None) -> Optional[_ServerEvent]:
        """The next event, ``None`` if none came within ``timeout`` (``Closed`` after
        shutdown)."""
    def peers(self) -> List[PeerCore]:
        """The handles of every live or lingering session."""
    def stats(self) -> Dict[str, int]: ...
    def kick(self, id: str, reason: str) -> bool:
        """Ends the session with this id; ``False`` if there is none."""
    def shutdown(self, drain: float = 1.0) -> List[Tuple[PeerCore, List[Message]]]:
        """Stops listening and closes every session (waiting up to ``drain`` seconds); what
        each peer never acknowledged."""

@final
class Completions:
    """The completed operations of one event loop, and the pipe that signals them."""

    def __init__(self) -> None: ...
    def fileno(self) -> int:
        """The pipe's reading end, for ``loop.add_reader``."""
    def drain(self) -> List[int]:
        """The ids of the operations completed since the last call."""

@final
class Op:
    """One operation under way on the runtime (aborted when dropped)."""

    @property
    def id(self) -> int:
        """The id that ``Completions.drain`` reports when it is done."""
    def result(self) -> Any:
        """The result once done (raising its exception, if it failed), ``None`` before;
        taken once."""
    def cancel(self) -> None:
        """Stops the operation (it only waited: nothing is lost). A result that came and was
        not taken is dropped now (an accepted session goes back to the server)."""
