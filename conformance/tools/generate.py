#!/usr/bin/env python3
"""Writes conformance/frames.json, streams.json and scenarios.json.

Every expected value here is written by hand from PROTOCOL.md and the version-2 rules (see
README.md); the byte strings come from the independent encoder in frames.py. Nothing is
captured from an implementation. Run from anywhere: python3 conformance/tools/generate.py
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from frames import encode, raw, u8, u16, u32, u64, with_flags, MAGIC  # noqa: E402

OUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

U32MAX = 2**32 - 1
U64MAX = 2**64 - 1
DEF = dict(max_frame=65536, max_message=16777216, window_messages=8192, window_bytes=8388608)
SID = "51" * 16
SID2 = "52" * 16
T1 = "70" * 16
T2 = "72" * 16
T3 = "73" * 16
T4 = "74" * 16
WRONG = "71" * 16


def h(b):
    return b.hex()


def txt(s):
    return s.encode("utf-8").hex()


# ----------------------------------------------------------------------------- frame objects


def hello_new(minv=1, maxv=2, first_seq=1, name="", credentials="", transforms=(), lim=DEF):
    f = dict(type="HELLO", min_version=minv, max_version=maxv, **lim, first_seq=first_seq)
    f.update(name=name, credentials=credentials, transforms=list(transforms))
    return f


def hello_resume(minv, maxv, sid, token, received, partial=0, name="", credentials="",
                 transforms=(), lim=DEF):
    f = dict(type="HELLO", min_version=minv, max_version=maxv, **lim)
    f.update(session_id=sid, resume_token=token, received=received)
    if minv >= 2:
        f["partial"] = partial
    else:
        assert partial == 0
    f.update(name=name, credentials=credentials, transforms=list(transforms))
    return f


def welcome_new(version, sid=SID, token=T1, first_seq=1, keepalive=3000, idle=10000, lim=DEF,
                transforms=()):
    f = dict(type="WELCOME", version=version, session_id=sid, resume_token=token, **lim)
    if version >= 2:
        f.update(keepalive_ms=keepalive, idle_timeout_ms=idle)
    f["first_seq"] = first_seq
    f["transforms"] = list(transforms)
    return f


def welcome_resumed(version, token, received, delivered, partial=0, sid=SID, keepalive=3000,
                    idle=10000, lim=DEF, transforms=()):
    f = dict(type="WELCOME", version=version, session_id=sid, resume_token=token, **lim)
    if version >= 2:
        f.update(keepalive_ms=keepalive, idle_timeout_ms=idle)
    f.update(received=received, delivered=delivered)
    if version >= 2:
        f["partial"] = partial
    else:
        assert partial == 0
    f["transforms"] = list(transforms)
    return f


def reject(code, min_version, max_version, reason="", retry=0):
    return dict(type="REJECT", code=code, retry_after_ms=retry, min_version=min_version,
                max_version=max_version, reason=reason)


def data(seq, body, more=False, ts=0, offset=None):
    f = dict(type="DATA", seq=seq, timestamp_us=ts, more=more)
    if offset is not None:
        f["offset"] = offset
    f["body"] = body
    return f


def ack(delivered, wm=8192, wb=8388608):
    return dict(type="ACK", delivered=delivered, window_messages=wm, window_bytes=wb)


def ping(v):
    return dict(type="PING", value=v)


def pong(v):
    return dict(type="PONG", value=v)


def goaway(code, retry=0, reason=""):
    return dict(type="GOAWAY", code=code, retry_after_ms=retry, reason=reason)


def close(code, delivered, reason=""):
    return dict(type="CLOSE", code=code, delivered=delivered, reason=reason)


def only(f, *keys):
    """The fields of `f` an expectation checks: `type` and `keys`."""
    return {"type": f["type"], **{k: f[k] for k in keys}}


# ------------------------------------------------------------------------------ frames.json

frames = []


def fv(id, desc, versions, f, length=None):
    b = encode(f)
    if length is not None:
        assert len(b) == length, (id, len(b), length)
    frames.append(dict(id=id, description=desc, version=versions, hex=h(b), frame=with_flags(f)))


TR8 = [("t%d" % i) + "x" * 30 for i in range(8)]  # 8 names of 32 bytes
assert all(len(n) == 32 for n in TR8)
NAME255 = "n" * 255
CRED4096 = "c5" * 4096

fv("hello-new-defaults", "§4.1 new-session HELLO, versions 1..1, default limits, no name, "
   "credentials or transforms: the 42-byte example of §4.1", [1, 2], hello_new(1, 1), 42)
fv("hello-new-offer-1-2", "§4.1/§4.6 new-session HELLO offering 1..2 (the same layout in both "
   "versions)", [1, 2], hello_new(1, 2), 42)
fv("hello-new-name-cred-transform", "§4.1/§3.3/§4.7 HELLO with a name, credentials and one "
   "transform", [1, 2], hello_new(1, 2, 7, name="alice", credentials=txt("secret"),
                                  transforms=["lz4"]), 42 + 5 + 6 + 4)
fv("hello-new-utf8-name", "§3.3 the name is UTF-8; its length prefix counts bytes", [1, 2],
   hello_new(1, 1, name="zoë ✓"))
fv("hello-new-max-fields", "§4.1/§5.1 HELLO with u64::MAX first_seq and u32::MAX limits "
   "(the parser takes any value; validation is the handshake's)", [1, 2],
   hello_new(1, 2, U64MAX, lim=dict(max_frame=U32MAX, max_message=U32MAX,
                                     window_messages=U32MAX, window_bytes=U32MAX)))
fv("hello-new-versions-0-0", "§4.6 a HELLO offering 0..0 parses (the empty range is refused by "
   "negotiation, not by the parser)", [1, 2], hello_new(0, 0))
fv("hello-resume-v1-layout", "§4.1 resume HELLO, version-1 layout (min_version 1): payload 68 "
   "bytes, 74 with the header", [1, 2], hello_resume(1, 2, SID, T1, 12), 74)
fv("hello-resume-v1-layout-1-1", "§4.1 resume HELLO offering 1..1", [1, 2],
   hello_resume(1, 1, SID, T1, 0), 74)
fv("hello-resume-v2-layout", "§4.1 (version 2) resume HELLO offering 2..2: `partial` (u64) "
   "follows `received` at payload offset 64; payload 76, frame 82", [2],
   hello_resume(2, 2, SID, T1, 1, partial=4), 82)
fv("hello-resume-v2-layout-zero-partial", "§4.1 (version 2) the version-2 layout is chosen by "
   "min_version >= 2, even with partial 0", [2], hello_resume(2, 3, SID, T1, 5, partial=0), 82)
fv("hello-resume-v2-max-partial", "§4.1 (version 2) u64::MAX received and partial", [2],
   hello_resume(2, 2, SID, T1, U64MAX, partial=U64MAX), 82)
fv("hello-resume-v1-largest", "§3.1/§3.3/§4.7 the largest version-1 HELLO: resume, name of "
   "255 bytes, credentials of 4,096 bytes, 8 transforms of 32 bytes: payload 4,683", [1, 2],
   hello_resume(1, 2, SID, T1, 3, name=NAME255, credentials=CRED4096, transforms=TR8),
   6 + 4683)
fv("hello-resume-v1-no-transforms-largest", "§3.1 longest HELLO without transforms: payload "
   "68 + 255 + 4,096 = 4,419", [1, 2],
   hello_resume(1, 1, SID, T1, 3, name=NAME255, credentials=CRED4096), 6 + 4419)
fv("hello-resume-v2-largest", "§3.1 (version 2) the largest HELLO of all: version-2 resume "
   "layout with the longest fields: payload 4,691", [2],
   hello_resume(2, 2, SID, T1, 3, partial=1, name=NAME255, credentials=CRED4096,
                transforms=TR8), 6 + 4691)
fv("welcome-new-v1", "§4.2 WELCOME version 1, new session: payload 59, frame 65", [1, 2],
   welcome_new(1), 65)
fv("welcome-resumed-v1", "§4.2 WELCOME version 1, RESUMED: payload 67, frame 73", [1, 2],
   welcome_resumed(1, T2, 7, 6), 73)
fv("welcome-new-v2", "§4.2 (version 2) WELCOME version 2, new: keepalive_ms and "
   "idle_timeout_ms at payload offset 50, then first_seq: payload 67, frame 73", [2],
   welcome_new(2), 73)
fv("welcome-resumed-v2", "§4.2 (version 2) WELCOME version 2, RESUMED: timings, received, "
   "delivered, partial: payload 83, frame 89", [2], welcome_resumed(2, T2, 7, 6, partial=4), 89)
fv("welcome-resumed-v2-max", "§4.2 (version 2) u32::MAX timings and u64::MAX positions, 8 "
   "transforms", [2],
   welcome_resumed(2, T2, U64MAX, U64MAX, partial=U64MAX, keepalive=U32MAX, idle=U32MAX,
                   transforms=TR8), 89 + 8 * 33)
fv("welcome-new-v2-transforms", "§4.2/§4.7 (version 2) WELCOME echoing two transforms", [2],
   welcome_new(2, transforms=["lz4", "sig"]), 73 + 8)
fv("welcome-new-v3-layout", "§4.2 a WELCOME whose version is 3 has the version-2 layout "
   "(version >= 2)", [2], welcome_new(3), 73)
fv("reject-version-mismatch", "§4.5 REJECT VersionMismatch with the server's range and a reason",
   [1, 2], reject("VersionMismatch", 1, 2, "no common protocol version"))
fv("reject-empty-reason", "§4.5 REJECT ServerFull, retry_after_ms 250, empty reason: payload 12",
   [1, 2], reject("ServerFull", 1, 1, "", retry=250), 18)
fv("reject-max-reason", "§3.3/§4.5 REJECT with a reason of exactly 1,024 bytes (multi-byte "
   "UTF-8)", [1, 2], reject("ProtocolError", 1, 2, "é" * 512, retry=U32MAX), 18 + 1024)
fv("reject-unknown-code", "§4.5 a REJECT code unknown to the receiver (0x0042) is kept as a "
   "number", [1, 2], reject(0x42, 1, 2, "?"))
fv("reject-incompatible", "§4.5/§4.7 REJECT Incompatible", [1, 2],
   reject("Incompatible", 1, 2, "message transform \"x\" is not supported here"))
fv("data-empty", "§5.1 DATA with an empty body: payload 16", [1, 2], data(1, ""), 22)
fv("data-body", "§5.1 DATA seq 1 with a timestamp and a body", [1, 2],
   data(1, txt("hello"), ts=1_700_000_000_000_000), 27)
fv("data-more", "§5.3 DATA with MORE (a chunk, more follow)", [1, 2],
   data(5, txt("0123"), more=True), 26)
fv("data-max-fields", "§5.1 DATA with u64::MAX seq and timestamp (parses; the seq is a "
   "violation at connection level)", [1, 2], data(U64MAX, "00", ts=U64MAX))
fv("data-continued", "§5.5 (version 2) DATA with CONTINUED (0x02): seq, timestamp_us, offset, "
   "then the chunk: prefix 24", [2], data(1, txt("4567"), more=False, offset=4), 34)
fv("data-continued-more", "§5.5 (version 2) DATA with CONTINUED and MORE (flags 0x03)", [2],
   data(9, txt("4567"), more=True, ts=77, offset=4), 34)
fv("data-continued-empty-max-offset", "§5.5 (version 2) CONTINUED with an empty chunk and "
   "offset u64::MAX (parses)", [2], data(1, "", offset=U64MAX), 30)
fv("ack", "§5.2 ACK", [1, 2], ack(12), 22)
fv("ack-max", "§5.2 ACK with u64::MAX delivered and u32::MAX window", [1, 2],
   ack(U64MAX, U32MAX, U32MAX), 22)
fv("ack-zero-window", "§5.2 an ACK granting a zero window parses (its receiver refuses it)",
   [1, 2], ack(3, 0, 0), 22)
fv("ping-zero", "§8 PING value 0", [1, 2], ping(0), 14)
fv("ping", "§8 PING", [1, 2], ping(0x0102030405060708), 14)
fv("pong-max", "§8 PONG value u64::MAX", [1, 2], pong(U64MAX), 14)
fv("goaway-resource-limit", "§7.1 GOAWAY ResourceLimit, retry 1,000 ms", [1, 2],
   goaway("ResourceLimit", 1000, "memory budget spent"))
fv("goaway-empty", "§7.1 GOAWAY Shutdown, empty reason: payload 8", [1, 2],
   goaway("Shutdown"), 14)
fv("goaway-max-reason", "§3.3/§7.1 GOAWAY with a 1,024-byte reason", [1, 2],
   goaway("Kicked", 5, "k" * 1024), 14 + 1024)
fv("close-normal", "§7.2 CLOSE Normal, empty reason: payload 12", [1, 2],
   close("Normal", 2), 18)
fv("close-protocol-error", "§7.2/§9 CLOSE ProtocolError with a reason", [1, 2],
   close("ProtocolError", 1, "gap: expected 1, got 2"))
fv("close-max", "§7.2 CLOSE with u64::MAX delivered and a 1,024-byte reason", [1, 2],
   close("FlowControl", U64MAX, "r" * 1024), 18 + 1024)
fv("close-unknown-code", "§7.3 a close code unknown to the receiver (0x0100) is kept as a "
   "number", [1, 2], close(0x100, 0))

# ----------------------------------------------------------------------------- streams.json

streams = []


def sv(id, desc, versions, chunks, fs, end, malformed=None, max_frame=65536):
    v = dict(id=id, description=desc, version=versions, max_frame=max_frame,
             input=[h(c) for c in chunks], frames=[with_flags(f) for f in fs], end=end)
    if malformed:
        v["malformed_frame"] = malformed
    streams.append(v)


P, A = ping(1), ack(2)
PA = encode(P) + encode(A)
sv("split-whole", "§3.1 two frames in one input", [1, 2], [PA], [P, A], "complete")
sv("split-bytewise", "§3.1 the same two frames fed one byte at a time: splits do not matter",
   [1, 2], [PA[i:i + 1] for i in range(len(PA))], [P, A], "complete")
sv("split-in-header", "§3.1 a split inside the header and inside the payload", [1, 2],
   [PA[:3], PA[3:10], PA[10:]], [P, A], "complete")
sv("empty-input", "§3.1 no bytes: nothing decoded, nothing pending", [1, 2], [], [], "complete")
sv("header-only", "§3.1 a header whose payload has not arrived is incomplete, not an error",
   [1, 2], [encode(P)[:6]], [], "incomplete")
sv("frame-then-partial", "§3.1 a frame, then part of the next: one frame, then incomplete",
   [1, 2], [PA[:20]], [P], "incomplete")
sv("partial-header", "§3.1 five header bytes: incomplete", [1, 2], [PA[:5]], [], "incomplete")
sv("too-large-before-payload", "§3.1/§3.4 a length above max_frame is TooLarge as soon as the "
   "header is complete, with no payload byte sent", [1, 2], [u32(65537) + u8(0x10) + u8(0)],
   [], "TooLarge")
sv("too-large-small-max", "§3.1 TooLarge checks the receiver's own max_frame (8,192)", [1, 2],
   [u32(8193) + u8(0x20) + u8(0)], [], "TooLarge", max_frame=8192)
sv("length-equal-max", "§3.1 a length equal to max_frame is allowed (the payload is awaited)",
   [1, 2], [u32(8192) + u8(0x10) + u8(0) + bytes(100)], [], "incomplete", max_frame=8192)
sv("too-large-after-frame", "§3.4 frames before the bad one are decoded", [1, 2],
   [encode(P) + u32(0xFFFFFFFF) + u8(0x01) + u8(0)], [P], "TooLarge")
sv("foreign-http", "§9 foreign traffic: the first four bytes of \"GET / HTTP/1.1\" read as a "
   "length far above max_frame", [1, 2], [b"GET / HTTP/1.1\r\n\r\n"], [], "TooLarge")
sv("unknown-type", "§3.2/§3.4 frame type 0x40 is UnknownType", [1, 2],
   [raw(0x40, 0, b"abcd")], [], "UnknownType")
sv("unknown-type-waits-for-payload", "§3.4 UnknownType is detected when the whole payload is "
   "present: before that the input is incomplete", [1, 2], [raw(0x40, 0, b"abcd")[:8]], [],
   "incomplete")
sv("unknown-type-zero", "§3.2 type 0x00 is UnknownType", [1, 2], [raw(0x00, 0, b"")], [],
   "UnknownType")
sv("reserved-flag-ping", "§3.2 PING with flag 0x01 is ReservedFlags", [1, 2],
   [raw(0x20, 0x01, u64(1))], [], "ReservedFlags")
sv("reserved-flag-ack", "§3.2 ACK with flag 0x80", [1, 2],
   [raw(0x11, 0x80, encode(A)[6:])], [], "ReservedFlags")
sv("reserved-flag-hello", "§3.2 HELLO with flag 0x02", [1, 2],
   [raw(0x01, 0x02, encode(hello_new())[6:])], [], "ReservedFlags")
sv("reserved-flag-welcome", "§3.2 WELCOME with flag 0x02 (CONTINUED is a DATA flag only)",
   [1, 2], [raw(0x02, 0x02, encode(welcome_new(2))[6:])], [], "ReservedFlags")
C4 = data(1, txt("4567"), offset=4)
sv("continued-on-v1", "§3.2/§5.5 DATA with CONTINUED (0x02) on a version-1 connection: a "
   "reserved bit, ReservedFlags", [1], [encode(C4)], [], "ReservedFlags")
sv("continued-on-v2", "§5.5 (version 2) the same bytes on a version-2 connection: DATA "
   "CONTINUED", [2], [encode(C4)], [C4], "complete")
sv("data-flag-0x04-on-v2", "§3.2 (version 2) DATA flag 0x04 is reserved in version 2 too",
   [2], [raw(0x10, 0x04, u64(1) + u64(0))], [], "ReservedFlags")
sv("reserved-before-malformed", "§3.4 ReservedFlags is detected before the payload layout "
   "(PING with flag and short payload)", [1, 2], [raw(0x20, 0x01, b"")], [], "ReservedFlags")
HN = encode(hello_new())[6:]
sv("bad-magic", "§3.4/§4.1 a HELLO not starting with STFD is BadMagic", [1, 2],
   [raw(0x01, 0, b"STFX" + HN[4:])], [], "BadMagic")
sv("hello-shorter-than-magic", "§3.4 a HELLO payload shorter than 4 bytes is Malformed", [1, 2],
   [raw(0x01, 0, b"STF")], [], "Malformed", "HELLO")
sv("hello-trailing", "§3.2 a HELLO with one trailing byte is Malformed", [1, 2],
   [raw(0x01, 0, HN + b"\x00")], [], "Malformed", "HELLO")
sv("hello-truncated", "§3.4 a new-session HELLO missing its transform count", [1, 2],
   [raw(0x01, 0, HN[:-1])], [], "Malformed", "HELLO")
HR1 = encode(hello_resume(1, 2, SID, T1, 1))[6:]
sv("hello-v1-layout-with-partial", "§4.1/§13 a resume HELLO with min_version 1 carrying the "
   "8 bytes of `partial` has trailing bytes: Malformed (the version-1 layout)", [1, 2],
   [raw(0x01, 0x01, HR1[:64] + u64(4) + HR1[64:])], [], "Malformed", "HELLO")
HR2 = encode(hello_resume(2, 2, SID, T1, 1, partial=4))[6:]
sv("hello-v2-layout-missing-partial", "§4.1 (version 2) a resume HELLO with min_version 2 "
   "without `partial` is short: Malformed", [1, 2], [raw(0x01, 0x01, HR2[:64] + HR2[72:])], [],
   "Malformed", "HELLO")
HELLO_NAME_AT = 32  # payload offset of name_len in a new-session HELLO
sv("hello-bad-utf8-name", "§3.3 a name that is not UTF-8 is Malformed", [1, 2],
   [raw(0x01, 0, HN[:32] + u8(2) + b"\xc3\x28" + HN[33:])], [], "Malformed", "HELLO")
sv("hello-credentials-4097", "§3.3 credentials longer than 4,096 bytes are Malformed", [1, 2],
   [raw(0x01, 0, HN[:33] + u16(4097) + bytes(4097) + u8(0))], [], "Malformed", "HELLO")
sv("hello-credentials-short", "§3.3 credentials length beyond the payload", [1, 2],
   [raw(0x01, 0, HN[:33] + u16(10) + b"abc")], [], "Malformed", "HELLO")
TRS = HN[:-1]  # a new-session HELLO up to its transform list


def tlist(*names):
    out = u8(len(names))
    for n in names:
        out += u8(len(n)) + n
    return out


sv("hello-transforms-8", "§4.7 a list of 8 transforms is the maximum", [1, 2],
   [raw(0x01, 0, TRS + tlist(*[n.encode() for n in TR8]))],
   [hello_new(transforms=TR8)], "complete")
sv("hello-transforms-count-9", "§4.7/point 6a: a transform count of 9 is Malformed", [1, 2],
   [raw(0x01, 0, TRS + tlist(*[b"t%d" % i for i in range(9)]))], [], "Malformed", "HELLO")
sv("hello-transform-empty-name", "§4.7 an empty transform name is Malformed", [1, 2],
   [raw(0x01, 0, TRS + tlist(b"lz4", b""))], [], "Malformed", "HELLO")
sv("hello-transform-non-ascii", "§4.7 a transform name with a non-ASCII byte (é) is Malformed",
   [1, 2], [raw(0x01, 0, TRS + tlist("zé".encode()))], [], "Malformed", "HELLO")
sv("hello-transform-space", "§4.7 a transform name with a space (not visible ASCII) is "
   "Malformed", [1, 2], [raw(0x01, 0, TRS + tlist(b"a b"))], [], "Malformed", "HELLO")
sv("hello-transform-del", "§4.7 a transform name with 0x7F is Malformed", [1, 2],
   [raw(0x01, 0, TRS + tlist(b"a\x7f"))], [], "Malformed", "HELLO")
sv("hello-transform-33-bytes", "§4.7 a transform name of 33 bytes is Malformed", [1, 2],
   [raw(0x01, 0, TRS + tlist(b"x" * 33))], [], "Malformed", "HELLO")
sv("hello-transform-32-bytes", "§4.7 a transform name of 32 bytes is valid", [1, 2],
   [raw(0x01, 0, TRS + tlist(b"x" * 32))], [hello_new(transforms=["x" * 32])], "complete")
sv("hello-transform-bytes-missing", "§4.7 a transform list whose count promises more names "
   "than present", [1, 2], [raw(0x01, 0, TRS + u8(2) + u8(3) + b"lz4")], [], "Malformed",
   "HELLO")
sv("hello-repeated-transform-parses", "§4.7/point 6a: a repeated name is well-formed (the "
   "handshake refuses it with Incompatible, not the parser)", [1, 2],
   [raw(0x01, 0, TRS + tlist(b"lz4", b"lz4"))], [hello_new(transforms=["lz4", "lz4"])],
   "complete")
W1 = encode(welcome_new(1))[6:]
W2 = encode(welcome_new(2))[6:]
sv("welcome-v2-short", "§4.2 (version 2) a WELCOME version 2 with the version-1 length lacks "
   "8 bytes: Malformed", [1, 2], [raw(0x02, 0, u16(2) + W1[2:])], [], "Malformed", "WELCOME")
sv("welcome-v1-trailing", "§4.2 a WELCOME version 1 with the version-2 length has trailing "
   "bytes: Malformed", [1, 2], [raw(0x02, 0, u16(1) + W2[2:])], [], "Malformed", "WELCOME")
sv("welcome-transforms-count-9", "§4.7 a WELCOME listing 9 transforms is Malformed", [1, 2],
   [raw(0x02, 0, W1[:-1] + tlist(*[b"t%d" % i for i in range(9)]))], [], "Malformed", "WELCOME")
sv("reject-short", "§4.5 a REJECT payload of 11 bytes is Malformed", [1, 2],
   [raw(0x03, 0, bytes(11))], [], "Malformed", "REJECT")
sv("reject-bad-utf8", "§3.3 a REJECT reason that is not UTF-8", [1, 2],
   [raw(0x03, 0, u16(6) + u32(0) + u16(1) + u16(1) + u16(2) + b"\xff\xfe")], [],
   "Malformed", "REJECT")
sv("data-short", "§3.4 a DATA payload of 15 bytes is Malformed", [1, 2],
   [raw(0x10, 0, bytes(15))], [], "Malformed", "DATA")
sv("data-continued-short", "§5.5 (version 2) a CONTINUED DATA payload of 23 bytes is "
   "Malformed", [2], [raw(0x10, 0x02, bytes(23))], [], "Malformed", "DATA")
sv("ack-trailing", "§3.2 an ACK payload of 17 bytes is Malformed", [1, 2],
   [raw(0x11, 0, encode(A)[6:] + b"\x00")], [], "Malformed", "ACK")
sv("ack-short", "§3.4 an ACK payload of 15 bytes", [1, 2], [raw(0x11, 0, bytes(15))], [],
   "Malformed", "ACK")
sv("ping-trailing", "§3.2 a PING payload of 9 bytes: trailing bytes are Malformed", [1, 2],
   [raw(0x20, 0, bytes(9))], [], "Malformed", "PING")
sv("pong-short", "§3.4 a PONG payload of 7 bytes is Malformed (named PONG)", [1, 2],
   [raw(0x21, 0, bytes(7))], [], "Malformed", "PONG")
sv("goaway-short", "§7.1 a GOAWAY payload of 7 bytes", [1, 2], [raw(0x30, 0, bytes(7))], [],
   "Malformed", "GOAWAY")
sv("goaway-bad-utf8", "§3.3 a GOAWAY reason that is not UTF-8", [1, 2],
   [raw(0x30, 0, u16(7) + u32(0) + u16(1) + b"\x80")], [], "Malformed", "GOAWAY")
sv("close-short", "§7.2 a CLOSE payload of 9 bytes", [1, 2], [raw(0x31, 0, bytes(9))], [],
   "Malformed", "CLOSE")
sv("close-bad-utf8", "§3.3 a CLOSE reason that is not UTF-8 (a truncated sequence)", [1, 2],
   [raw(0x31, 0, u16(0) + u64(1) + u16(2) + b"\xe2\x82")], [], "Malformed", "CLOSE")
sv("close-reason-1025", "§3.3 a reason length of 1,025 is Malformed even with the bytes "
   "present", [1, 2], [raw(0x31, 0, u16(0) + u64(1) + u16(1025) + b"r" * 1025)], [],
   "Malformed", "CLOSE")
sv("close-reason-1024", "§3.3 a reason of 1,024 bytes is valid", [1, 2],
   [raw(0x31, 0, u16(0) + u64(1) + u16(1024) + b"r" * 1024)],
   [close("Normal", 1, "r" * 1024)], "complete")
sv("close-reason-length-beyond-payload", "§3.3 a reason length beyond the payload", [1, 2],
   [raw(0x31, 0, u16(0) + u64(1) + u16(5) + b"ab")], [], "Malformed", "CLOSE")
sv("error-stops-decoding", "§3.4 after an error nothing more is decoded: a bad PING then a good "
   "ACK", [1, 2], [raw(0x20, 0, bytes(9)) + encode(A)], [], "Malformed", "PING")
sv("mixed-stream-v2", "§3-§8 (version 2) a stream of every established-connection frame type",
   [2], [b"".join(encode(f) for f in [
       data(1, txt("ab"), more=True), data(1, txt("cd")), C4, A, P, pong(9),
       goaway("Normal"), close("Normal", 1)])],
   [data(1, txt("ab"), more=True), data(1, txt("cd")), C4, A, P, pong(9), goaway("Normal"),
    close("Normal", 1)], "complete")

# --------------------------------------------------------------------------- scenarios.json

scenarios = []


class S:
    def __init__(self, id, desc, applies_to, role, **config):
        self.v = dict(id=id, description=desc, version=applies_to, role=role, config=config,
                      steps=[])
        scenarios.append(self.v)

    def step(self, **s):
        self.v["steps"].append(s)
        return self

    def connect(self, **kw):
        return self.step(connect=kw)

    def peer(self, *fs, raw_bytes=None):
        b = b"".join(encode(f) for f in fs) if raw_bytes is None else raw_bytes
        s = {"peer_sends": h(b)}
        if raw_bytes is None:
            s["peer_frames"] = [with_flags(f) for f in fs]
        self.v["steps"].append(s)
        return self

    def app(self, action, **kw):
        return self.step(app=action, **kw)

    def sent(self, *fs, allow_other=None):
        s = {"expect_sent": list(fs)}
        if allow_other:
            s["allow_other"] = allow_other
        self.v["steps"].append(s)
        return self

    def events(self, *es):
        return self.step(expect_events=list(es))

    def advance(self, ms):
        return self.step(advance_ms=ms)

    def closed(self):
        return self.step(transport_closed=True)


def ev(name, **kw):
    return dict(event=name, **kw)


EST_NEW = ev("established", resumed=False, session_id=SID)
EST_RES = ev("established", resumed=True, session_id=SID)
CUT = ev("connection_ended", cause="transport_closed")


def server_established(s, version=2, offer=(1, 2), first_seq=1, **hello_kw):
    """Steps: a new session on the server, WELCOME checked, the client's proof not sent yet."""
    s.connect()
    s.peer(hello_new(*offer, first_seq=first_seq, **hello_kw))
    s.events(ev("hello_received", version=version, resume=False))
    s.app("accept_new", session_id=SID, resume_token=T1)
    s.sent(welcome_new(version, first_seq=1, transforms=hello_kw.get("transforms", ())))
    s.events(EST_NEW)
    return s


def client_established(s, version=2, offer=(1, 2), welcome_kw=None):
    s.connect()
    s.sent(hello_new(*offer))
    s.peer(welcome_new(version, **(welcome_kw or {})))
    s.sent(only(ack(1), "delivered"))
    s.events(EST_NEW)
    return s


# --- handshake and versions

s = S("server-new-session-v2", "§4.1/§4.2/§4.6 (version 2) client offers 1..2, server speaks "
      "1..2: WELCOME version 2 with the server's timings; pipelined proof and DATA; ACK within "
      "100 ms", [2], "server", versions=[1, 2])
server_established(s)
s.peer(ack(1), data(1, txt("hello")))
s.app("recv", expect=dict(seq=1, body=txt("hello")))
s.advance(100)
s.sent(ack(2))

s = S("server-timings-in-welcome", "§4.2/§8 (version 2) WELCOME carries the server's configured "
      "keepalive and idle timeout in milliseconds", [2], "server", versions=[1, 2],
      keepalive_ms=1500, idle_timeout_ms=5000)
s.connect().peer(hello_new(1, 2))
s.events(ev("hello_received", version=2, resume=False))
s.app("accept_new", session_id=SID, resume_token=T1)
s.sent(welcome_new(2, keepalive=1500, idle=5000))
s.events(EST_NEW)

s = S("server-v1-only-answers-1-2", "§4.6 a server configured 1..1 answers a HELLO offering 1..2 "
      "with WELCOME version 1 (no timings)", [1], "server", versions=[1, 1])
server_established(s, version=1)
s.peer(ack(1), data(1, "01"))
s.app("recv", expect=dict(seq=1, body="01"))

s = S("server-v1-only-refuses-v2-resume-layout", "§4.6 (version 2) a client offering 2..2 with "
      "the version-2 resume layout to a server configured 1..1: REJECT VersionMismatch with "
      "the server's range (an implementation that knows only version 1 answers ProtocolError "
      "instead, §13)", [2], "server", versions=[1, 1])
s.connect().peer(hello_resume(2, 2, SID, T1, 1, partial=4))
s.sent(only(reject("VersionMismatch", 1, 1), "code", "retry_after_ms", "min_version",
            "max_version"))
s.events(ev("connection_ended", cause="rejected", code="VersionMismatch"))

s = S("server-versions-0-0", "§4.6 point 6c: there is no version 0; a HELLO offering 0..0 gets "
      "REJECT VersionMismatch", [1, 2], "server", versions=[1, 2])
s.connect().peer(hello_new(0, 0))
s.sent(only(reject("VersionMismatch", 1, 2), "code", "min_version", "max_version"))
s.events(ev("connection_ended", cause="rejected", code="VersionMismatch"))

s = S("server-versions-inverted", "§4.6 an inverted range 2..1 is empty: REJECT VersionMismatch",
      [1, 2], "server", versions=[1, 2])
s.connect().peer(hello_new(2, 1))
s.sent(only(reject("VersionMismatch", 1, 2), "code", "min_version", "max_version"))
s.events(ev("connection_ended", cause="rejected", code="VersionMismatch"))

s = S("server-versions-0-2", "§4.6 point 6c: a HELLO offering 0..2 negotiates version 2", [2],
      "server", versions=[1, 2])
server_established(s, offer=(0, 2))

s = S("server-versions-3-9", "§4.6 a HELLO offering only versions the server does not speak "
      "(3..9): REJECT VersionMismatch", [1, 2], "server", versions=[1, 2])
s.connect().peer(hello_new(3, 9))
s.sent(only(reject("VersionMismatch", 1, 2), "code", "min_version", "max_version"))
s.events(ev("connection_ended", cause="rejected", code="VersionMismatch"))

s = S("server-invalid-limits", "§4.1 a HELLO announcing max_frame 8,191: REJECT ProtocolError",
      [1, 2], "server", versions=[1, 2])
s.connect().peer(hello_new(1, 2, lim=dict(DEF, max_frame=8191)))
s.sent(only(reject("ProtocolError", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="ProtocolError"))

s = S("server-app-reject", "§4.5 the application refuses a HELLO: REJECT with its code, retry "
      "advice and reason, carrying the server's version range", [1, 2], "server",
      versions=[1, 2])
s.connect().peer(hello_new(1, 2, credentials=txt("bad")))
s.events(ev("hello_received", version=2, resume=False, credentials=txt("bad")))
s.app("reject", code="Unauthenticated", retry_after_ms=0, reason="bad credentials")
s.sent(reject("Unauthenticated", 1, 2, "bad credentials"))
s.events(ev("connection_ended", cause="rejected", code="Unauthenticated"))

s = S("server-first-frame-not-hello", "§9 a first frame other than HELLO: REJECT ProtocolError",
      [1, 2], "server", versions=[1, 2])
s.connect().peer(ping(1))
s.sent(only(reject("ProtocolError", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="ProtocolError"))

s = S("server-bad-magic", "§4.1/§9 a HELLO with bad magic: REJECT ProtocolError", [1, 2],
      "server", versions=[1, 2])
s.connect().peer(raw_bytes=raw(0x01, 0, b"XXXX" + HN[4:]))
s.sent(only(reject("ProtocolError", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="ProtocolError"))

s = S("client-new-session-v2", "§4.1/§4.2/§8 (version 2) client configured 1..2 offers 1..2; "
      "on WELCOME version 2 it sends the proof ACK at once", [2], "client", versions=[1, 2])
client_established(s)
s.peer(data(1, txt("hi")))
s.app("recv", expect=dict(seq=1, body=txt("hi")))
s.advance(100)
s.sent(ack(2))

s = S("client-new-session-v1", "§4.2 a client offering 1..2 accepts WELCOME version 1 (no "
      "timings)", [1], "client", versions=[1, 2])
client_established(s, version=1)

s = S("client-queues-until-welcome", "§2 rule 2: a client sends nothing after HELLO until "
      "WELCOME; then the proof ACK, then its queued DATA", [1, 2], "client", versions=[1, 2])
s.app("send", body=txt("early"))
s.connect()
s.sent(hello_new(1, 2))
s.advance(50)
s.sent()
s.peer(welcome_new(2))
s.sent(only(ack(1), "delivered"), data(1, txt("early")))
s.events(EST_NEW)
s.peer(ack(2))
s.events(ev("acknowledged", first=1, end=2))

s = S("client-welcome-version-outside-range", "§4.2 check 1: a WELCOME choosing version 2 when "
      "the client offered 1..1 ends the session; nothing is sent", [1], "client",
      versions=[1, 1])
s.connect().sent(hello_new(1, 1))
s.peer(welcome_new(2))
s.sent()
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = S("client-reject-version-mismatch", "§4.5 REJECT VersionMismatch is final: the session "
      "ends as rejected and its queued messages are handed back", [1, 2], "client",
      versions=[2, 2])
s.app("send", body="aa")
s.connect().sent(hello_new(2, 2))
s.peer(reject("VersionMismatch", 1, 1, "no common protocol version"))
s.sent()
s.events(ev("session_ended", cause="rejected", code="VersionMismatch", unacknowledged=[1]))

s = S("client-reject-server-full", "§4.5 REJECT ServerFull is retryable: only the connection "
      "ends; the next connection repeats a new-session HELLO", [1, 2], "client",
      versions=[1, 2])
s.connect().sent(hello_new(1, 2))
s.peer(reject("ServerFull", 1, 2, "full", retry=500))
s.events(ev("connection_ended", cause="rejected", code="ServerFull"))
s.connect().sent(hello_new(1, 2))

s = S("client-welcome-idle-timeout-50", "§8 (version 2) a WELCOME version 2 announcing "
      "idle_timeout_ms 50 (below 100) is a violation: the session ends, nothing is sent", [2],
      "client", versions=[1, 2])
s.connect().sent(hello_new(1, 2))
s.peer(welcome_new(2, keepalive=10, idle=50))
s.sent()
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = S("client-welcome-keepalive-not-below-idle", "§8 (version 2) keepalive_ms must be below "
      "idle_timeout_ms: 1000/1000 is a violation", [2], "client", versions=[1, 2])
s.connect().sent(hello_new(1, 2))
s.peer(welcome_new(2, keepalive=1000, idle=1000))
s.sent()
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = S("client-welcome-keepalive-zero", "§8 (version 2) keepalive_ms 0 is a violation", [2],
      "client", versions=[1, 2])
s.connect().sent(hello_new(1, 2))
s.peer(welcome_new(2, keepalive=0, idle=1000))
s.sent()
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = S("client-adopts-server-timings", "§8 (version 2) the client's quiet interval is at most half "
      "the server's idle timeout: server idle 300 ms, client keepalive 3 s, idle 10 s: a PING "
      "after 150 ms with nothing received, and another 150 ms after it",
      [2], "client", versions=[1, 2], keepalive_ms=3000, idle_timeout_ms=10000)
client_established(s, welcome_kw=dict(keepalive=100, idle=300))
s.advance(150)
s.sent({"type": "PING"}, allow_other=["PING"])
s.advance(150)
s.sent({"type": "PING"}, allow_other=["PING"])

s = S("client-quiet-interval-counts-from-the-last-receipt", "§8 (version 2) the quiet interval "
      "counts from the last byte received: client keepalive 250 ms, idle 1,000 ms, server idle "
      "10,000 ms: Q = 500 ms; a PONG answers the server's PING at 400 ms, and the client's own "
      "PING is due 500 ms after that PING arrived", [2], "client", versions=[1, 2],
      keepalive_ms=250, idle_timeout_ms=1000)
client_established(s, welcome_kw=dict(keepalive=400, idle=10000))
s.advance(400)
s.peer(ping(7))
s.sent(pong(7), allow_other=["PING"])
s.advance(500)
s.sent({"type": "PING"}, allow_other=["PING"])

s = S("client-keeps-its-own-idle-timeout", "§8 (version 2) the client keeps its own idle "
      "timeout whatever the server announces: own 1,000 ms, server keepalive 900 ms: the "
      "connection still lives after 900 ms of silence and ends at 1,000 ms", [2], "client",
      versions=[1, 2], keepalive_ms=250, idle_timeout_ms=1000)
client_established(s, welcome_kw=dict(keepalive=900, idle=5000))
s.advance(900)
s.sent({"type": "PING"}, allow_other=["PING"])
s.events()
s.advance(100)
s.sent(allow_other=["PING"])
s.events(ev("connection_ended", cause="idle_timeout"))

s = S("client-ignores-a-huge-server-keepalive", "§8 (version 2) no announced value lengthens "
      "the client's idle timeout: server keepalive 4294967294 ms, idle 4294967295 ms; the "
      "client (own idle 1,000 ms) ends the connection after 1,000 ms of silence", [2], "client",
      versions=[1, 2], keepalive_ms=250, idle_timeout_ms=1000)
client_established(s, welcome_kw=dict(keepalive=4294967294, idle=4294967295))
s.advance(1000)
s.sent(allow_other=["PING"])
s.events(ev("connection_ended", cause="idle_timeout"))

s = S("client-goaway-during-handshake", "§7.1 GOAWAY while awaiting WELCOME ends only the "
      "connection", [1, 2], "client", versions=[1, 2])
s.connect().sent(hello_new(1, 2))
s.peer(goaway("Shutdown", 1000, "restart"))
s.sent()
s.events(ev("connection_ended", cause="peer_goaway", code="Shutdown"))

# --- transforms

s = S("server-transform-repeated", "§4.7 point 6a: a well-formed list with a repeated name: "
      "REJECT Incompatible", [1, 2], "server", versions=[1, 2], transforms=["lz4", "zstd"])
s.connect().peer(hello_new(1, 2, transforms=["lz4", "lz4"]))
s.sent(only(reject("Incompatible", 1, 2), "code", "min_version", "max_version"))
s.events(ev("connection_ended", cause="rejected", code="Incompatible"))

s = S("server-transform-unsupported", "§4.7 a transform the server does not support: REJECT "
      "Incompatible", [1, 2], "server", versions=[1, 2], transforms=["lz4"])
s.connect().peer(hello_new(1, 2, transforms=["zstd"]))
s.sent(only(reject("Incompatible", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="Incompatible"))

s = S("server-transform-required-missing", "§4.7 a required transform missing from the list: "
      "REJECT Incompatible", [1, 2], "server", versions=[1, 2], transforms=["lz4", "sig"],
      required_transforms=["sig"])
s.connect().peer(hello_new(1, 2, transforms=["lz4"]))
s.sent(only(reject("Incompatible", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="Incompatible"))

s = S("server-transform-accepted-echoed", "§4.7 an accepted chain is echoed in WELCOME", [2],
      "server", versions=[1, 2], transforms=["lz4", "sig"], required_transforms=["sig"])
server_established(s, transforms=["sig", "lz4"])

s = S("server-transform-count-9", "§4.7 point 6a: a transform list that does not parse (count "
      "9) is Malformed: REJECT ProtocolError", [1, 2], "server", versions=[1, 2],
      transforms=["lz4"])
s.connect().peer(raw_bytes=raw(0x01, 0, TRS + tlist(*[b"t%d" % i for i in range(9)])))
s.sent(only(reject("ProtocolError", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="ProtocolError"))

# --- pipelining (point 5)

s = S("server-pipelined-after-hello", "§2 step 4: frames sent after the HELLO in the same write "
      "wait until the answer is out, then are handled as frames of the established connection",
      [1, 2], "server", versions=[1, 2])
s.connect().peer(hello_new(1, 2), ack(1), data(1, txt("piped")))
s.events(ev("hello_received", version=2, resume=False))
s.sent()
s.app("accept_new", session_id=SID, resume_token=T1)
s.sent(welcome_new(2))
s.events(EST_NEW)
s.app("recv", expect=dict(seq=1, body=txt("piped")))

s = S("server-pipelined-split", "§2 step 4: the same bytes in a later write before the answer: "
      "the same outcome, however TCP split them", [1, 2], "server", versions=[1, 2])
s.connect().peer(hello_new(1, 2))
s.events(ev("hello_received", version=2, resume=False))
s.peer(ack(1), data(1, txt("piped")))
s.sent()
s.events()
s.app("accept_new", session_id=SID, resume_token=T1)
s.sent(welcome_new(2))
s.events(EST_NEW)
s.app("recv", expect=dict(seq=1, body=txt("piped")))

s = S("server-pipelined-after-reject", "§2 step 4: bytes held after the HELLO are ignored "
      "after a REJECT", [1, 2], "server", versions=[1, 2])
s.connect().peer(hello_new(1, 2), ping(1))
s.events(ev("hello_received", version=2, resume=False))
s.app("reject", code="ServerFull", retry_after_ms=100, reason="full")
s.sent(reject("ServerFull", 1, 2, "full", retry=100))
s.events(ev("connection_ended", cause="rejected", code="ServerFull"))

BIG = data(1, "00" * (8192 - 16))
assert len(encode(BIG)) == 8198
s = S("server-too-much-before-welcome", "§2 step 4: more than max_frame + 6 bytes (8,198 with "
      "max_frame 8,192) after the HELLO before the answer: REJECT ProtocolError", [1, 2],
      "server", versions=[1, 2], max_frame=8192)
s.connect().peer(hello_new(1, 2))
s.events(ev("hello_received", version=2, resume=False))
s.peer(raw_bytes=encode(BIG) + b"\x00")
s.sent(only(reject("ProtocolError", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="ProtocolError"))

s = S("server-too-much-before-welcome-same-read", "§2 step 4: the limit holds just the same "
      "for bytes that come in the same read as the HELLO: REJECT ProtocolError", [1, 2],
      "server", versions=[1, 2], max_frame=8192)
s.connect().peer(raw_bytes=encode(hello_new(1, 2)) + encode(BIG) + b"\x00")
s.sent(only(reject("ProtocolError", 1, 2), "code"))
s.events(ev("hello_received", version=2, resume=False),
         ev("connection_ended", cause="rejected", code="ProtocolError"))

s = S("server-max-frame-plus-6-before-welcome", "§2 step 4: exactly max_frame + 6 bytes after "
      "the HELLO are held and handled after WELCOME", [1, 2], "server", versions=[1, 2],
      max_frame=8192)
s.connect().peer(hello_new(1, 2))
s.events(ev("hello_received", version=2, resume=False))
s.peer(raw_bytes=encode(BIG))
s.sent()
s.app("accept_new", session_id=SID, resume_token=T1)
s.sent(only(welcome_new(2, lim=dict(DEF, max_frame=8192)), "version", "max_frame"))
s.events(EST_NEW)
s.app("recv", expect=dict(seq=1, body="00" * (8192 - 16)))

# --- resume and tokens

s = S("server-resume-token-rotation", "§4.4 rule A: the token rotates on every resume; the old "
      "token stays valid until the client proves it holds the new one, then it is refused", [2],
      "server", versions=[1, 2])
server_established(s)
s.peer(ack(1))
s.app("send", body=txt("a1"))
s.sent(data(1, txt("a1")))
s.closed().events(CUT)
# Resume with T1: WELCOME RESUMED with T2; message 1 resent (the client did not receive it).
s.connect().peer(hello_resume(1, 2, SID, T1, 1))
s.events(ev("hello_received", version=2, resume=True, session_id=SID, received=1, partial=0))
s.app("accept_resume", resume_token=T2)
s.sent(welcome_resumed(2, T2, 1, 1), data(1, txt("a1")))
s.events(EST_RES)
# The cut loses the WELCOME before the client speaks: T1 is still accepted (rule A).
s.closed().events(CUT)
s.connect().peer(hello_resume(1, 2, SID, T1, 1))
s.events(ev("hello_received", version=2, resume=True, session_id=SID, received=1))
s.app("accept_resume", resume_token=T3)
s.sent(welcome_resumed(2, T3, 1, 1), data(1, txt("a1")))
s.events(EST_RES)
# The proof: the client's first frame after WELCOME. T3 becomes the only valid token.
s.peer(ack(2))
s.events(ev("acknowledged", first=1, end=2))
s.closed().events(CUT)
s.connect().peer(hello_resume(1, 2, SID, T1, 2))
s.events(ev("hello_received", version=2, resume=True, session_id=SID))
s.app("accept_resume", resume_token=T4)
s.sent(only(reject("UnknownSession", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="UnknownSession"))
s.connect().peer(hello_resume(1, 2, SID, T3, 2))
s.events(ev("hello_received", version=2, resume=True, session_id=SID, received=2))
s.app("accept_resume", resume_token=T4)
s.sent(welcome_resumed(2, T4, 1, 1))
s.events(EST_RES)

s = S("server-resume-wrong-token", "§4.4 a resume with a token the session does not accept: "
      "REJECT UnknownSession, the session untouched", [1, 2], "server", versions=[1, 2])
server_established(s)
s.peer(ack(1))
s.closed().events(CUT)
s.connect().peer(hello_resume(1, 2, SID, WRONG, 1))
s.events(ev("hello_received", version=2, resume=True))
s.app("accept_resume", resume_token=T2)
s.sent(only(reject("UnknownSession", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="UnknownSession"))
s.connect().peer(hello_resume(1, 2, SID, T1, 1))
s.events(ev("hello_received", version=2, resume=True))
s.app("accept_resume", resume_token=T2)
s.sent(welcome_resumed(2, T2, 1, 1))
s.events(EST_RES)

s = S("server-resume-v1", "§4.4 a resume negotiating version 1: WELCOME RESUMED version 1, "
      "unacknowledged messages resent whole from the client's received position", [1],
      "server", versions=[1, 1])
server_established(s, version=1)
s.peer(ack(1), data(1, txt("c1")), data(2, txt("c2")))
s.app("recv", expect=dict(seq=1, body=txt("c1")))
s.app("send", body=txt("s1"))
s.app("send", body=txt("s2"))
s.sent(ack(2), data(1, txt("s1")), data(2, txt("s2")), allow_other=["ACK"])
s.closed().events(CUT)
s.connect().peer(hello_resume(1, 1, SID, T1, 2))
s.events(ev("hello_received", version=1, resume=True, received=2))
s.app("accept_resume", resume_token=T2)
s.sent(welcome_resumed(1, T2, 3, 2), data(2, txt("s2")))
s.events(EST_RES)
s.app("recv", expect=dict(seq=2, body=txt("c2")))

# --- version 2: a message received in part continues after the resume (point 1)

s = S("server-continues-client-partial", "§5.5 (version 2) the client states it holds 4 bytes "
      "of server message 1 (resume HELLO, version-2 layout): the server's first DATA is "
      "CONTINUED at offset 4, further chunks plain DATA", [2], "server", versions=[1, 2],
      max_chunk=4)
server_established(s)
s.peer(ack(1))
s.app("send", body=txt("0123456789"))
s.sent(data(1, txt("0123"), more=True), data(1, txt("4567"), more=True), data(1, txt("89")))
s.closed().events(CUT)
s.connect().peer(hello_resume(2, 2, SID, T1, 1, partial=4))
s.events(ev("hello_received", version=2, resume=True, session_id=SID, received=1, partial=4))
s.app("accept_resume", resume_token=T2)
s.sent(welcome_resumed(2, T2, 1, 1, partial=0), data(1, txt("4567"), more=True, offset=4),
       data(1, txt("89")))
s.events(EST_RES)
s.peer(ack(2))
s.events(ev("acknowledged", first=1, end=2))

s = S("server-continued-partial-at-last-chunk", "§5.5 (version 2) a continuation that fits one "
      "chunk is a single CONTINUED DATA without MORE", [2], "server", versions=[1, 2],
      max_chunk=4)
server_established(s)
s.peer(ack(1))
s.app("send", body=txt("0123456789"))
s.sent(data(1, txt("0123"), more=True), data(1, txt("4567"), more=True), data(1, txt("89")))
s.closed().events(CUT)
s.connect().peer(hello_resume(2, 2, SID, T1, 1, partial=8))
s.events(ev("hello_received", version=2, resume=True, partial=8))
s.app("accept_resume", resume_token=T2)
s.sent(welcome_resumed(2, T2, 1, 1), data(1, txt("89"), offset=8))
s.events(EST_RES)


def server_holding_part(id, desc, versions=(1, 2), resume_offer=(1, 2)):
    """A server that kept 4 bytes ("abcd") of client message 1 across a cut, resumed."""
    s = S(id, desc, [2] if resume_offer[1] >= 2 else [1, 2], "server",
          versions=list(versions))
    server_established(s)
    s.peer(ack(1), data(1, txt("abcd"), more=True))
    s.closed().events(CUT)
    s.connect().peer(hello_resume(resume_offer[0], resume_offer[1], SID, T1, 1))
    v = min(resume_offer[1], versions[1])
    s.events(ev("hello_received", version=v, resume=True, received=1, partial=0))
    s.app("accept_resume", resume_token=T2)
    s.sent(welcome_resumed(v, T2, 1, 1, partial=4 if v >= 2 else 0))
    s.events(EST_RES)
    return s


s = server_holding_part("server-holds-partial-continued", "§5.5 (version 2) the server kept 4 "
                        "bytes of client message 1: WELCOME RESUMED says partial 4, the client "
                        "continues with CONTINUED DATA at offset 4")
s.peer(ack(1), data(1, txt("efgh"), offset=4))
s.app("recv", expect=dict(seq=1, body=txt("abcdefgh")))

s = server_holding_part("server-holds-partial-continued-then-chunks", "§5.5 (version 2) a "
                        "CONTINUED chunk with MORE, then plain DATA chunks complete the message")
s.peer(ack(1), data(1, txt("ef"), more=True, offset=4), data(1, txt("gh"), more=True),
       data(1, txt("ij")))
s.app("recv", expect=dict(seq=1, body=txt("abcdefghij")))

s = server_holding_part("server-holds-partial-plain-data", "§5.5 (version 2) plain DATA where "
                        "CONTINUED at the held offset is required: CLOSE ProtocolError")
s.peer(ack(1), data(1, txt("abcdefgh")))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = server_holding_part("server-holds-partial-wrong-offset", "§5.5 (version 2) CONTINUED at an "
                        "offset other than the held byte count: CLOSE ProtocolError")
s.peer(ack(1), data(1, txt("defg"), offset=3))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = server_holding_part("server-holds-partial-v1-resume", "§5.5 (version 2) the server drops "
                        "its held part when the resumed connection negotiates version 1; the "
                        "message comes whole in plain DATA", resume_offer=(1, 1))
s.peer(ack(1), data(1, txt("abcdefgh")))
s.app("recv", expect=dict(seq=1, body=txt("abcdefgh")))

s = S("server-partial-not-kept-in-v1", "§5.3 on a version-1 connection a message received in "
      "part dies with the connection: WELCOME version 1 and the message is resent whole", [1],
      "server", versions=[1, 1])
server_established(s, version=1)
s.peer(ack(1), data(1, txt("abcd"), more=True))
s.closed().events(CUT)
s.connect().peer(hello_resume(1, 1, SID, T1, 1))
s.events(ev("hello_received", version=1, resume=True))
s.app("accept_resume", resume_token=T2)
s.sent(welcome_resumed(1, T2, 1, 1))
s.events(EST_RES)
s.peer(ack(1), data(1, txt("abcdefgh")))
s.app("recv", expect=dict(seq=1, body=txt("abcdefgh")))

s = S("server-impossible-partial", "§5.5 (version 2) a stated partial of a message never sent, "
      "or not shorter than the message: REJECT ProtocolError, the session untouched", [2],
      "server", versions=[1, 2], max_chunk=4)
server_established(s)
s.peer(ack(1))
s.closed().events(CUT)
# Nothing was sent: a partial of message 1 is impossible.
s.connect().peer(hello_resume(2, 2, SID, T1, 1, partial=3))
s.events(ev("hello_received", version=2, resume=True, partial=3))
s.app("accept_resume", resume_token=T2)
s.sent(only(reject("ProtocolError", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="ProtocolError"))
# Untouched: T1 still resumes it.
s.connect().peer(hello_resume(1, 2, SID, T1, 1))
s.events(ev("hello_received", version=2, resume=True))
s.app("accept_resume", resume_token=T2)
s.sent(welcome_resumed(2, T2, 1, 1))
s.events(EST_RES)
s.peer(ack(1))
s.app("send", body=txt("0123456789"))
s.sent(data(1, txt("0123"), more=True), data(1, txt("4567"), more=True), data(1, txt("89")))
s.closed().events(CUT)
# A partial equal to the message's length is impossible too.
s.connect().peer(hello_resume(2, 2, SID, T2, 1, partial=10))
s.events(ev("hello_received", version=2, resume=True, partial=10))
s.app("accept_resume", resume_token=T3)
s.sent(only(reject("ProtocolError", 1, 2), "code"))
s.events(ev("connection_ended", cause="rejected", code="ProtocolError"))

s = S("server-continued-without-part", "§5.5 (version 2) CONTINUED DATA when no part is held: "
      "CLOSE ProtocolError", [2], "server", versions=[1, 2])
server_established(s)
s.peer(ack(1), data(1, txt("abcd"), offset=0))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = S("server-continued-inside-message", "§5.5 (version 2) CONTINUED DATA in the middle of a "
      "message being reassembled: CLOSE ProtocolError", [2], "server", versions=[1, 2])
server_established(s)
s.peer(ack(1), data(1, txt("ab"), more=True), data(1, txt("cd"), offset=2))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = S("server-continued-on-v1", "§3.2 CONTINUED on a version-1 connection is a reserved flag: "
      "CLOSE ProtocolError", [1], "server", versions=[1, 1])
server_established(s, version=1)
s.peer(ack(1), data(1, txt("abcd"), offset=0))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))


def client_holding_part(id, desc, versions=(1, 2)):
    s = S(id, desc, [2] if versions[1] >= 2 else [1], "client", versions=list(versions))
    client_established(s, version=min(2, versions[1]), offer=versions)
    s.peer(data(1, txt("abcd"), more=True))
    s.closed().events(CUT)
    return s


s = client_holding_part("client-holds-partial", "§4.1/§5.5 (version 2) a client holding 4 bytes "
                        "of server message 1 resumes with the version-2 layout, offering "
                        "max(own min, 2)..own max, partial 4; the server continues at offset 4")
s.connect().sent(hello_resume(2, 2, SID, T1, 1, partial=4))
s.peer(welcome_resumed(2, T2, 1, 1))
s.sent(only(ack(1), "delivered"))
s.events(EST_RES)
s.peer(data(1, txt("efgh"), offset=4))
s.app("recv", expect=dict(seq=1, body=txt("abcdefgh")))
s.advance(100)
s.sent(ack(2))

s = client_holding_part("client-holds-partial-v1-only", "§5.3/§5.5 a client whose max version "
                        "is 1 drops the part: version-1 layout, the message comes whole",
                        versions=(1, 1))
s.connect().sent(hello_resume(1, 1, SID, T1, 1))
s.peer(welcome_resumed(1, T2, 1, 1))
s.sent(only(ack(1), "delivered"))
s.events(EST_RES)
s.peer(data(1, txt("abcdefgh")))
s.app("recv", expect=dict(seq=1, body=txt("abcdefgh")))

for code in ["VersionMismatch", "ProtocolError"]:
    s = client_holding_part(f"client-holds-partial-v1-server-{code}",
                            f"§4.5/§4.6 (version 2) a client that offered 2..2 only because it "
                            f"holds a part gets REJECT {code} from a version-1-only server: not "
                            f"final; the part is dropped and the next connection resumes with "
                            f"the configured range 1..2 in the version-1 layout")
    s.connect().sent(hello_resume(2, 2, SID, T1, 1, partial=4))
    s.peer(reject(code, 1, 1, "version 1 only"))
    s.sent()
    s.events(ev("connection_ended", cause="rejected", code=code))
    s.connect().sent(hello_resume(1, 2, SID, T1, 1))

s = S("client-no-part-v1-layout", "§4.1 (version 2) a client holding no part resumes with the "
      "version-1 layout and its configured range, so that a version-1 server can resume it", [2],
      "client", versions=[1, 2])
client_established(s)
s.closed().events(CUT)
s.connect().sent(hello_resume(1, 2, SID, T1, 1))

s = client_holding_part("client-holds-partial-plain-data", "§5.5 (version 2) the client holds "
                        "4 bytes; plain DATA instead of CONTINUED: CLOSE ProtocolError")
s.connect().sent(hello_resume(2, 2, SID, T1, 1, partial=4))
s.peer(welcome_resumed(2, T2, 1, 1))
s.sent(only(ack(1), "delivered"))
s.events(EST_RES)
s.peer(data(1, txt("abcdefgh")))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = S("client-continues-server-partial", "§5.5 (version 2) WELCOME RESUMED says the server holds "
      "3 bytes of client message 1: the client continues with CONTINUED DATA at offset 3, then "
      "plain chunks", [2], "client", versions=[1, 2], max_chunk=4)
client_established(s)
s.app("send", body=txt("0123456789"))
s.sent(data(1, txt("0123"), more=True), data(1, txt("4567"), more=True), data(1, txt("89")))
s.closed().events(CUT)
s.connect().sent(hello_resume(1, 2, SID, T1, 1))
s.peer(welcome_resumed(2, T2, 1, 1, partial=3))
s.sent(only(ack(1), "delivered"), data(1, txt("3456"), more=True, offset=3),
       data(1, txt("789")))
s.events(EST_RES)
s.peer(ack(2))
s.events(ev("acknowledged", first=1, end=2))

s = S("client-impossible-partial-in-welcome", "§5.5 (version 2) a WELCOME RESUMED stating a "
      "partial of a message the client never sent is a violation: the session ends, nothing "
      "is sent", [2], "client", versions=[1, 2])
client_established(s)
s.closed().events(CUT)
s.connect().sent(hello_resume(1, 2, SID, T1, 1))
s.peer(welcome_resumed(2, T2, 1, 1, partial=3))
s.sent()
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

# --- data and flow control violations


def est_server(id, desc, versions=(1, 2), first_seq=1, **cfg):
    v = versions[1]
    s = S(id, desc, [v], "server", versions=list(versions),
          **cfg)
    server_established(s, version=v, first_seq=first_seq)
    return s


for vs in [(1, 1), (1, 2)]:
    tag = "v%d" % vs[1]
    s = est_server("server-gap-" + tag, "§5.1 DATA with seq above received (a gap): CLOSE "
                   "ProtocolError with the receiver's delivered", vs)
    s.v["version"] = [vs[1]]
    s.peer(ack(1), data(2, "00"))
    s.sent(only(close("ProtocolError", 1), "code", "delivered"))
    s.events(ev("session_ended", cause="violation", code="ProtocolError"))

    s = est_server("server-duplicate-interrupted-" + tag, "§5.1 point 6b: while the chunks of a "
                   "duplicate message are dropped, a chunk of another message: CLOSE "
                   "ProtocolError", vs)
    s.v["version"] = [vs[1]]
    s.peer(ack(1), data(1, "01"), data(1, "01", more=True), data(2, "02"))
    s.sent(only(close("ProtocolError", 1), "code", "delivered"))
    s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = est_server("server-duplicate-dropped", "§5.1 a duplicate (seq below received), chunked or "
               "not, is dropped; the next message is delivered")
s.peer(ack(1), data(1, "01"), data(1, "01", more=True), data(1, "01"), data(1, "01"),
       data(2, "02"))
s.app("recv", expect=dict(seq=1, body="01"))
s.app("recv", expect=dict(seq=2, body="02"))
s.app("recv", expect=None)

s = est_server("server-chunk-of-other-message", "§5.3 a chunk of another message during "
               "reassembly: CLOSE ProtocolError")
s.peer(ack(1), data(1, "01", more=True), data(2, "02"))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = est_server("server-seq-max", "§5.1 DATA with seq 2^64-1 is a violation whatever received "
               "is", first_seq=U64MAX)
s.peer(ack(1), data(U64MAX, "00"))
s.sent(only(close("ProtocolError", U64MAX), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = est_server("server-message-window", "§6 a message beyond the granted message window "
               "(window_messages 2, nothing taken): CLOSE FlowControl", window_messages=2)
# The server announces its own window in WELCOME.
s.v["steps"][4]["expect_sent"] = [welcome_new(2, lim=dict(DEF, window_messages=2))]
s.peer(ack(1), data(1, "01"), data(2, "02"), data(3, "03"))
s.sent(only(close("FlowControl", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="FlowControl"))

s = est_server("server-byte-window", "§6 bytes beyond the granted byte window (window_bytes 8, "
               "5 bytes waiting, 5 more): CLOSE FlowControl", window_bytes=8)
s.v["steps"][4]["expect_sent"] = [welcome_new(2, lim=dict(DEF, window_bytes=8))]
s.peer(ack(1), data(1, "0102030405"), data(2, "0102030405"))
s.sent(only(close("FlowControl", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="FlowControl"))

s = est_server("server-byte-window-single-large", "§6 a single message larger than the byte "
               "window is allowed when nothing is waiting", window_bytes=8)
s.v["steps"][4]["expect_sent"] = [welcome_new(2, lim=dict(DEF, window_bytes=8))]
s.peer(ack(1), data(1, "00" * 20))
s.app("recv", expect=dict(seq=1, body="00" * 20))
s.advance(100)
s.sent(ack(2, wb=8))

s = est_server("server-byte-window-chunks", "§6 the receiver checks every chunk: 5 bytes "
               "waiting, then a chunked message passing 8 bytes in its second chunk: CLOSE "
               "FlowControl", window_bytes=8)
s.v["steps"][4]["expect_sent"] = [welcome_new(2, lim=dict(DEF, window_bytes=8))]
s.peer(ack(1), data(1, "0102030405"), data(2, "01", more=True), data(2, "020304", more=True))
s.sent(only(close("FlowControl", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="FlowControl"))

s = est_server("server-message-too-large", "§5.3 a message above the receiver's max_message "
               "(16): CLOSE MessageTooLarge", max_message=16)
s.v["steps"][4]["expect_sent"] = [welcome_new(2, lim=dict(DEF, max_message=16))]
s.peer(ack(1), data(1, "00" * 10, more=True), data(1, "00" * 7))
s.sent(only(close("MessageTooLarge", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="MessageTooLarge"))

s = est_server("server-ack-zero-window", "§5.2 an ACK granting a zero window: CLOSE FlowControl "
               "(checked before delivered)")
s.peer(ack(1, 0, 8388608))
s.sent(only(close("FlowControl", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="FlowControl"))

s = est_server("server-ack-zero-bytes", "§5.2 an ACK granting zero bytes: CLOSE FlowControl")
s.peer(ack(1), ack(1, 8192, 0))
s.sent(only(close("FlowControl", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="FlowControl"))

s = est_server("server-ack-beyond-sent", "§5.2 an ACK acknowledging a message never sent: CLOSE "
               "ProtocolError")
s.peer(ack(2))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = est_server("server-hello-after-handshake", "§9 a HELLO on an established connection: CLOSE "
               "ProtocolError")
s.peer(ack(1), hello_new(1, 2))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))

s = est_server("server-frame-too-large", "§3.1/§9 a frame longer than max_frame after the "
               "handshake: CLOSE FrameTooLarge", max_frame=8192)
s.v["steps"][4]["expect_sent"] = [welcome_new(2, lim=dict(DEF, max_frame=8192))]
s.peer(raw_bytes=encode(ack(1)) + u32(8193) + u8(0x10) + u8(0))
s.sent(only(close("FrameTooLarge", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="FrameTooLarge"))

s = est_server("server-ping-pong", "§8 a PING is answered with a PONG echoing its value")
s.peer(ack(1), ping(0xDEADBEEF))
s.sent(pong(0xDEADBEEF))

s = est_server("server-peer-goaway", "§7.1 GOAWAY from the client ends the connection; the "
               "session survives and is resumed", [1, 2])
s.peer(ack(1), goaway("Shutdown", 0, "bye"))
s.sent()
s.events(ev("connection_ended", cause="peer_goaway", code="Shutdown"))
s.connect().peer(hello_resume(1, 2, SID, T1, 1))
s.events(ev("hello_received", version=2, resume=True))
s.app("accept_resume", resume_token=T2)
s.sent(welcome_resumed(2, T2, 1, 1))
s.events(EST_RES)

s = est_server("server-idle-timeout", "§8 nothing received for idle_timeout (1,000 ms): the "
               "connection ends without a frame; the session survives", keepalive_ms=400,
               idle_timeout_ms=1000)
s.v["steps"][4]["expect_sent"] = [welcome_new(2, keepalive=400, idle=1000)]
s.peer(ack(1))
s.advance(999)
s.sent({"type": "PING"}, allow_other=["PING"])
s.events()
s.advance(1)
s.sent()
s.events(ev("connection_ended", cause="idle_timeout"))

# --- CLOSE

s = est_server("server-close-by-peer", "§7.2 the client sends CLOSE: the server answers CLOSE "
               "Normal with its final delivered and ends the session (confirmed); its "
               "unacknowledged message is handed back")
s.peer(ack(1), data(1, txt("m")))
s.app("recv", expect=dict(seq=1, body=txt("m")))
s.app("send", body=txt("s"))
s.sent(data(1, txt("s")), allow_other=["ACK"])
s.peer(close("Normal", 1, "done"))
s.sent(close("Normal", 2, ""), allow_other=["ACK"])
s.events(ev("session_ended", cause="closed", code="Normal", by_peer=True, confirmed=True,
            unacknowledged=[1]))

s = est_server("server-close-initiated", "§7.2 the server application closes: CLOSE with its "
               "delivered; the inbox is discarded, later DATA ignored; the peer's CLOSE ends the "
               "session (confirmed)")
s.peer(ack(1), data(1, txt("x")))
s.app("close", code="Shutdown", reason="bye")
s.sent(close("Shutdown", 1, "bye"))
s.peer(data(2, txt("y")), close("Normal", 1))
s.sent()
s.events(ev("session_ended", cause="closed", code="Shutdown", by_peer=False, confirmed=True,
            discarded=1))

s = S("client-close-exchange", "§7.2 the client closes after its message was acknowledged; the "
      "server's CLOSE confirms", [1, 2], "client", versions=[1, 2])
client_established(s)
s.app("send", body=txt("q"))
s.sent(data(1, txt("q")))
s.peer(ack(2))
s.events(ev("acknowledged", first=1, end=2))
s.app("close", code="Normal", reason="")
s.sent(close("Normal", 1, ""))
s.peer(close("Normal", 2))
s.sent()
s.events(ev("session_ended", cause="closed", code="Normal", by_peer=False, confirmed=True,
            unacknowledged=[]))

s = S("client-close-violation", "§9 a violation on an established client: CLOSE ProtocolError "
      "and the session ends", [1, 2], "client", versions=[1, 2])
client_established(s)
s.peer(data(3, "00"))
s.sent(only(close("ProtocolError", 1), "code", "delivered"))
s.events(ev("session_ended", cause="violation", code="ProtocolError"))


# Scenarios whose connections negotiate version 2 although the rule they test holds in both.
for sc in scenarios:
    if sc["id"] in {"server-pipelined-after-hello", "server-pipelined-split",
                    "server-max-frame-plus-6-before-welcome", "server-resume-wrong-token",
                    "client-queues-until-welcome", "client-close-exchange",
                    "client-close-violation"}:
        sc["version"] = [2]

# ------------------------------------------------------------------------------------ write


def check_ids(vs):
    ids = [v["id"] for v in vs]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]


for name, vs in [("frames", frames), ("streams", streams), ("scenarios", scenarios)]:
    check_ids(vs)
    doc = {
        "suite": "steadfast wire protocol conformance vectors",
        "kind": name,
        "format": 1,
        "vectors": vs,
    }
    with open(os.path.join(OUT, name + ".json"), "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    print(name, len(vs))
