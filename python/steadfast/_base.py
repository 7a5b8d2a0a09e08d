"""What the blocking and the asyncio `Peer` share: the session's identity and state."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from ._steadfast import Message, PeerCore


class PeerInfo:
    """A session's identity and state, read without waiting."""

    __slots__ = ("_core", "__weakref__")

    def __init__(self, core: PeerCore) -> None:
        self._core = core

    @property
    def id(self) -> Optional[str]:
        """The session's id (32 hex digits; the same on both sides)."""
        return self._core.id

    @property
    def name(self) -> Optional[str]:
        """The client's name, if it gave one."""
        return self._core.name

    @property
    def addr(self) -> Optional[str]:
        """The address of the other end of the current connection."""
        return self._core.addr

    @property
    def connected(self) -> bool:
        """A connection carries the session now."""
        return self._core.connected

    @property
    def ended(self) -> bool:
        """The session is over."""
        return self._core.ended

    @property
    def end_reason(self) -> Optional[str]:
        """Why the session ended, once it has."""
        return self._core.end_reason

    @property
    def next_seq(self) -> Optional[int]:
        """The sequence number the next message sent will carry (over the session's whole
        life: a session restored from its state continues its numbering)."""
        return self._core.next_seq

    def stats(self) -> Dict[str, Any]:
        """The session's counters (queued, sent, acknowledged, retransmitted, received, ...)."""
        return self._core.stats()

    def unacknowledged(self) -> List[Message]:
        """Copies of the messages sent and not acknowledged yet, in order."""
        return self._core.unacknowledged()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PeerInfo) and self._core == other._core

    def __hash__(self) -> int:
        return hash(self._core)

    def __repr__(self) -> str:
        return repr(self._core)
