"""The envelope of named routes and request/response, as the Rust ``steadfast::rpc`` module
writes it: a MessagePack array ``[kind, route, id, payload]`` whose payload is the value,
itself MessagePack. Python and Rust peers understand each other's requests."""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import msgpack  # type: ignore[import-untyped, unused-ignore]  # no stubs, no py.typed

MESSAGE = 0
REQUEST = 1
REPLY = 2
ERROR_REPLY = 3
UNKNOWN_ROUTE = "unknown route"


class Envelope(NamedTuple):
    kind: int
    route: str
    id: int
    payload: bytes


def pack(value: Any) -> bytes:
    """A value as MessagePack (what ``send_value`` sends)."""
    out: bytes = msgpack.packb(value, use_bin_type=True)
    return out


def unpack(body: bytes) -> Any:
    """MessagePack as Python objects."""
    return msgpack.unpackb(body, raw=False, strict_map_key=False)


def envelope(kind: int, route: str, id: int, payload: bytes) -> bytes:
    out: bytes = msgpack.packb([kind, route, id, payload], use_bin_type=True)
    return out


def open_envelope(body: bytes) -> Optional[Envelope]:
    """The envelope in ``body``, or ``None`` if it is not one."""
    try:
        v = msgpack.unpackb(body, raw=False, strict_map_key=False)
    except Exception:
        return None
    if (
        isinstance(v, list)
        and len(v) == 4
        and isinstance(v[0], int)
        and isinstance(v[1], str)
        and isinstance(v[2], int)
        and isinstance(v[3], (bytes, list))
    ):
        payload = v[3] if isinstance(v[3], bytes) else bytes(v[3])
        return Envelope(v[0], v[1], v[2], payload)
    return None


def reply_to(body: bytes, id: int, route: str) -> "tuple[Optional[bool], Any]":
    """What a message means to a request that waits for the reply to ``id``: ``(True,
    value)`` its reply; ``(False, None)`` a reply to another (earlier) request, to drop;
    ``(None, None)`` not a reply, to keep for ``recv``. Raises
    :class:`~steadfast.RequestError` for its error reply."""
    env = open_envelope(body)
    if env is None or env.kind not in (REPLY, ERROR_REPLY):
        return None, None
    if env.id != id:
        return False, None
    if env.kind == ERROR_REPLY:
        from ._errors import RequestError

        raise RequestError(f"{route}: {unpack(env.payload)}")
    return True, unpack(env.payload)
