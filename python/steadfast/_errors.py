"""The exceptions of steadfast: every one is a subclass of :class:`Error`."""

from __future__ import annotations

from typing import TYPE_CHECKING, List

if TYPE_CHECKING:
    from ._steadfast import Message


class Error(Exception):
    """Anything steadfast reports."""


class Timeout(Error, TimeoutError):
    """A wait given ``timeout=`` ran out. Nothing was taken or queued by the call."""


class Full(Error):
    """The outbox is at its bound (``try_send``): nothing was queued. Wait, or use ``send``."""


class TooLarge(Error, ValueError):
    """The message exceeds the largest message the session allows (ours or the peer's)."""

    def __init__(self, message: str, size: int, limit: int) -> None:
        super().__init__(message)
        #: The message's size in bytes.
        self.size = size
        #: The largest allowed.
        self.limit = limit


class Closed(Error):
    """The session is closing or over (or the server shut down): nothing more goes through it."""


class SessionLost(Error):
    """The session ended before the peer's application took these messages.

    ``unacknowledged`` holds every message this side sent that the peer never acknowledged, in
    order: they were not delivered, and nothing else was lost.
    """

    def __init__(self, message: str, reason: str, unacknowledged: List[Message]) -> None:
        super().__init__(message)
        #: Why the session ended.
        self.reason = reason
        #: The messages sent and never acknowledged, in order.
        self.unacknowledged = unacknowledged


class Refused(Error):
    """The server refused the session (bad token, full, incompatible, ...)."""

    def __init__(self, message: str, code: str, reason: str) -> None:
        super().__init__(message)
        #: The refusal's code (``Unauthorized``, ``ServerFull``, ...).
        self.code = code
        #: The server's reason.
        self.reason = reason


class ConnectionFailed(Error, ConnectionError):
    """No address could be reached, or the handshake failed."""


class BindFailed(Error, OSError):
    """The server could not listen on an address."""


class ConfigError(Error, ValueError):
    """A setting cannot be used (TLS files, state directory, ...)."""


class StoreError(Error):
    """The session store (state directory or PostgreSQL) failed."""


class RequestError(Error):
    """A request got no value back: the handler failed, the route is unknown, or the
    session was lost before the reply (then the handler may or may not have run)."""
