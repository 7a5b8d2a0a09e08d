"""An independent encoder of steadfast frames (protocol versions 1 and 2), written from
PROTOCOL.md §3-§8 and the version-2 changes (conformance/README.md), not from the Rust code.

It turns the frame objects of the conformance vectors (see README.md, "Frame objects") into
bytes. The Rust test (steadfast/tests/conformance.rs) checks that the Rust encoder and decoder
agree with every byte string produced here.
"""

import struct

HEADER_LEN = 6
MAGIC = b"STFD"

TYPES = {
    "HELLO": 0x01,
    "WELCOME": 0x02,
    "REJECT": 0x03,
    "DATA": 0x10,
    "ACK": 0x11,
    "PING": 0x20,
    "PONG": 0x21,
    "GOAWAY": 0x30,
    "CLOSE": 0x31,
}

REJECT_CODES = {
    "VersionMismatch": 0x0001,
    "Unauthenticated": 0x0002,
    "UnknownSession": 0x0003,
    "SessionExpired": 0x0004,
    "ServerFull": 0x0005,
    "ProtocolError": 0x0006,
    "ShuttingDown": 0x0007,
    "Incompatible": 0x0008,
}

CLOSE_CODES = {
    "Normal": 0x0000,
    "ProtocolError": 0x0001,
    "FrameTooLarge": 0x0002,
    "MessageTooLarge": 0x0003,
    "FlowControl": 0x0004,
    "IdleTimeout": 0x0005,
    "Kicked": 0x0006,
    "Shutdown": 0x0007,
    "SessionTakenOver": 0x0008,
    "HandshakeTimeout": 0x0009,
    "ResourceLimit": 0x000A,
}

RESUME = RESUMED = MORE = 0x01
CONTINUED = 0x02


def u8(v):
    return struct.pack(">B", v)


def u16(v):
    return struct.pack(">H", v)


def u32(v):
    return struct.pack(">I", v)


def u64(v):
    return struct.pack(">Q", v)


def code(table, c):
    return table[c] if isinstance(c, str) else c


def transforms(names):
    out = u8(len(names))
    for n in names:
        b = n.encode("ascii")
        out += u8(len(b)) + b
    return out


def limits(f):
    return u32(f["max_frame"]) + u32(f["max_message"]) + u32(f["window_messages"]) + u32(
        f["window_bytes"]
    )


def reason(s):
    b = s.encode("utf-8")
    return u16(len(b)) + b


def payload(f):
    """(type code, flags, payload bytes) of a frame object."""
    t = f["type"]
    if t == "HELLO":
        resume = "session_id" in f
        p = MAGIC + u16(f["min_version"]) + u16(f["max_version"]) + limits(f)
        if resume:
            p += bytes.fromhex(f["session_id"]) + bytes.fromhex(f["resume_token"])
            p += u64(f["received"])
            # Version-2 layout: a resume HELLO whose min_version is 2 or more carries `partial`.
            if f["min_version"] >= 2:
                p += u64(f["partial"])
        else:
            p += u64(f["first_seq"])
        name = f["name"].encode("utf-8")
        cred = bytes.fromhex(f["credentials"])
        p += u8(len(name)) + name + u16(len(cred)) + cred + transforms(f["transforms"])
        return 0x01, RESUME if resume else 0, p
    if t == "WELCOME":
        resumed = "received" in f
        p = u16(f["version"]) + bytes.fromhex(f["session_id"]) + bytes.fromhex(f["resume_token"])
        p += limits(f)
        v2 = f["version"] >= 2
        if v2:
            p += u32(f["keepalive_ms"]) + u32(f["idle_timeout_ms"])
        if resumed:
            p += u64(f["received"]) + u64(f["delivered"])
            if v2:
                p += u64(f["partial"])
        else:
            p += u64(f["first_seq"])
        p += transforms(f["transforms"])
        return 0x02, RESUMED if resumed else 0, p
    if t == "REJECT":
        p = u16(code(REJECT_CODES, f["code"])) + u32(f["retry_after_ms"])
        p += u16(f["min_version"]) + u16(f["max_version"]) + reason(f["reason"])
        return 0x03, 0, p
    if t == "DATA":
        flags = MORE if f["more"] else 0
        p = u64(f["seq"]) + u64(f["timestamp_us"])
        if "offset" in f:
            flags |= CONTINUED
            p += u64(f["offset"])
        p += bytes.fromhex(f["body"])
        return 0x10, flags, p
    if t == "ACK":
        return 0x11, 0, u64(f["delivered"]) + u32(f["window_messages"]) + u32(f["window_bytes"])
    if t in ("PING", "PONG"):
        return TYPES[t], 0, u64(f["value"])
    if t == "GOAWAY":
        p = u16(code(CLOSE_CODES, f["code"])) + u32(f["retry_after_ms"]) + reason(f["reason"])
        return 0x30, 0, p
    if t == "CLOSE":
        p = u16(code(CLOSE_CODES, f["code"])) + u64(f["delivered"]) + reason(f["reason"])
        return 0x31, 0, p
    raise ValueError(t)


def raw(kind, flags, p):
    return u32(len(p)) + u8(kind) + u8(flags) + p


def encode(f):
    kind, flags, p = payload(f)
    if "flags" in f:
        assert f["flags"] == flags, (f, flags)
    return raw(kind, flags, p)


def with_flags(f):
    """The frame object with its `flags` field filled in (as frames.json lists them)."""
    _, flags, _ = payload(f)
    out = {"type": f["type"], "flags": flags}
    out.update({k: v for k, v in f.items() if k != "type"})
    return out
