"""A peer written in Python with only the `msgpack` package: it speaks steadfast's raw framing
(a 4-byte big-endian length, then the payload) and exchanges typed messages encoded as
MessagePack maps with field names, as `steadfast::typed` encodes them.

Usage: python3 msgpack_peer.py HOST PORT
Sends one Order, expects the Rust side's Receipt for it, exits 0 if it is right.
"""

import socket
import struct
import sys

import msgpack


def send_frame(sock, payload):
    sock.sendall(struct.pack(">I", len(payload)) + payload)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise EOFError("connection closed mid-frame")
        buf += chunk
    return buf


def recv_frame(sock, limit=1 << 20):
    (length,) = struct.unpack(">I", recv_exact(sock, 4))
    if length > limit:
        raise ValueError("frame too large")
    return recv_exact(sock, length)


def main():
    host, port = sys.argv[1], int(sys.argv[2])
    with socket.create_connection((host, port), timeout=10) as sock:
        order = {
            "id": 7,
            "customer": "Zoë",
            "items": ["tea", "scones"],
            "total": 12.5,
            "express": True,
            "note": None,
            "blob": b"\x00\x01\xff",
        }
        send_frame(sock, msgpack.packb(order, use_bin_type=True))
        reply = msgpack.unpackb(recv_frame(sock), raw=False)
        expected = {"order": 7, "accepted": True, "items": 2, "customer": "Zoë", "digest": [0, 1, 255]}
        if reply != expected:
            print(f"unexpected reply: {reply!r}", file=sys.stderr)
            return 1
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
