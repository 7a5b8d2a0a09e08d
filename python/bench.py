"""steadfast from Python, side by side with pyzmq and with two of its predecessors, in one run.

    pip install ./python pyzmq korinet tinyproto
    python3 python/bench.py              # medians of 5 runs; --runs, --count, --json

Printed, not asserted. Every figure is on TCP loopback (127.0.0.1), one connection, 64-byte
messages, sender and receiver in this process (two threads), medians of the runs:

- ``send``: a Python loop of ``client.send(body)``; the clock stops when the last receipt
  resolves (every message taken by the receiving application and acknowledged).
- ``send_many``: ``client.send_many`` of lists of 1,024 bodies, the same stop.
- pyzmq PUSH/PULL: a loop of ``push.send(body)``; the clock stops when the PULL side has
  received them all (nothing is acknowledged: what a cut loses, ZeroMQ loses).
- KoriNet and tinyproto, the predecessors: a loop of their ``send``/``transmit``, each of
  which waits for the peer's status reply (their only delivery check).
- Request/response: one request, one reply, 64 bytes each way, the round trip timed in the
  client: steadfast (``send`` + ``recv``, the server echoing), pyzmq REQ/REP, KoriNet.

Goals (issue 19): ``send`` >= 0.5x pyzmq PUSH/PULL, ``send_many`` >= 1x, request/response p50
<= pyzmq REQ/REP.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import threading
import time
import sys
from typing import Callable, Dict, List, Optional

# The installed package, not the source next to this file (which lacks the built extension).
sys.path = [p for p in sys.path if os.path.abspath(p or ".") != os.path.dirname(os.path.abspath(__file__))]

import steadfast  # noqa: E402

SIZE = 64


def body(i: int) -> bytes:
    return i.to_bytes(8, "big") + b"\x2a" * (SIZE - 8)


# -- throughput ---------------------------------------------------------------------------


def steadfast_send(n: int, batch: Optional[int]) -> float:
    server = steadfast.Server(["127.0.0.1:0"])
    client = steadfast.Client(server.addresses[0])
    peer = server.accept(timeout=10)
    bodies = [body(i) for i in range(n)]
    got = 0

    def read() -> None:
        nonlocal got
        while got < n:
            got += len(peer.recv_many(8192, timeout=60))

    reader = threading.Thread(target=read)
    reader.start()
    t0 = time.perf_counter()
    last = None
    if batch is None:
        send = client.send
        for b in bodies:
            last = send(b)
    else:
        for i in range(0, n, batch):
            last = client.send_many(bodies[i : i + batch])
    assert last is not None
    last.wait(timeout=120)
    elapsed = time.perf_counter() - t0
    reader.join()
    assert got == n
    client.close(timeout=1)
    server.shutdown(drain=0.0)
    return n / elapsed


def zmq_push_pull(n: int) -> Optional[float]:
    try:
        import zmq
    except ImportError:
        return None
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    port = pull.bind_to_random_port("tcp://127.0.0.1")
    push = ctx.socket(zmq.PUSH)
    push.connect(f"tcp://127.0.0.1:{port}")
    bodies = [body(i) for i in range(n)]
    done = threading.Event()

    def read() -> None:
        for _ in range(n):
            pull.recv()
        done.set()

    reader = threading.Thread(target=read)
    reader.start()
    t0 = time.perf_counter()
    send = push.send
    for b in bodies:
        send(b)
    done.wait()
    elapsed = time.perf_counter() - t0
    reader.join()
    push.close(linger=0)
    pull.close(linger=0)
    ctx.term()
    return n / elapsed


def _tcp_pair() -> "tuple[socket.socket, socket.socket]":
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    a = socket.create_connection(listener.getsockname())
    b, _ = listener.accept()
    listener.close()
    for s in (a, b):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return a, b


def korinet_send(n: int) -> Optional[float]:
    try:
        import korinet.protocol
        import korinet.server
    except ImportError:
        return None
    a, b = _tcp_pair()
    sender = korinet.protocol.v2(a)
    receiver = korinet.server.server(b)

    def read() -> None:
        for _ in range(n):
            receiver.recv()

    reader = threading.Thread(target=read)
    reader.start()
    t0 = time.perf_counter()
    for i in range(n):
        # KoriNet's client.send: the message, then the server's {"statusP": True}.
        sender.send({"n": i, "body": body(i).hex()})
        assert sender.recv()["statusP"] is True
    elapsed = time.perf_counter() - t0
    reader.join()
    a.close()
    b.close()
    return n / elapsed


def tinyproto_send(n: int) -> Optional[float]:
    try:
        from tinyproto.connection import TinyProtoConnection
    except ImportError:
        return None
    a, b = _tcp_pair()
    sender = TinyProtoConnection(a)
    receiver = TinyProtoConnection(b)

    def read() -> None:
        for _ in range(n):
            receiver.receive()

    reader = threading.Thread(target=read)
    reader.start()
    t0 = time.perf_counter()
    for i in range(n):
        sender.transmit(body(i))  # waits for the receiver's status code before the body
    reader.join()
    elapsed = time.perf_counter() - t0
    a.close()
    b.close()
    return n / elapsed


# -- request/response ---------------------------------------------------------------------


def percentile(samples: List[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(q * len(s)))]


def steadfast_rtt(n: int) -> List[float]:
    server = steadfast.Server(["127.0.0.1:0"])
    client = steadfast.Client(server.addresses[0])
    peer = server.accept(timeout=10)

    def echo() -> None:
        for m in peer:
            try:
                peer.send(m.body)
            except steadfast.Closed:
                return

    t = threading.Thread(target=echo)
    t.start()
    samples = []
    b = body(0)
    for _ in range(n):
        t0 = time.perf_counter()
        client.send(b)
        client.recv(timeout=10)
        samples.append(time.perf_counter() - t0)
    client.close(timeout=1)
    t.join()
    server.shutdown(drain=0.0)
    return samples


def zmq_rtt(n: int) -> Optional[List[float]]:
    try:
        import zmq
    except ImportError:
        return None
    ctx = zmq.Context()
    rep = ctx.socket(zmq.REP)
    port = rep.bind_to_random_port("tcp://127.0.0.1")
    req = ctx.socket(zmq.REQ)
    req.connect(f"tcp://127.0.0.1:{port}")

    def serve() -> None:
        for _ in range(n):
            rep.send(rep.recv())

    t = threading.Thread(target=serve)
    t.start()
    samples = []
    b = body(0)
    for _ in range(n):
        t0 = time.perf_counter()
        req.send(b)
        req.recv()
        samples.append(time.perf_counter() - t0)
    t.join()
    req.close(linger=0)
    rep.close(linger=0)
    ctx.term()
    return samples


def korinet_rtt(n: int) -> Optional[List[float]]:
    try:
        import korinet.protocol
        import korinet.server
    except ImportError:
        return None
    a, b = _tcp_pair()
    client = korinet.protocol.v2(a)
    server = korinet.server.server(b)

    def serve() -> None:
        for _ in range(n):
            server.send(server.recv())

    t = threading.Thread(target=serve)
    t.start()
    samples = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.send({"ping": 1})  # KoriNet's client.send and client.recv, with their statuses
        assert client.recv()["statusP"] is True
        client.recv()
        client.send({"statusP": True})
        samples.append(time.perf_counter() - t0)
    t.join()
    a.close()
    b.close()
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--count", type=int, default=200_000, help="messages per throughput run")
    ap.add_argument("--round-trips", type=int, default=5_000)
    ap.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    a = ap.parse_args()
    slow = max(1, a.count // 40)  # the stop-and-wait predecessors get fewer messages

    runs: Dict[str, List[float]] = {}

    def record(name: str, f: Callable[[], Optional[float]]) -> None:
        v = f()
        if v is not None:
            runs.setdefault(name, []).append(v)

    rtts: Dict[str, List[float]] = {}
    for r in range(a.runs):
        record("steadfast_send", lambda: steadfast_send(a.count, None))
        record("steadfast_send_many", lambda: steadfast_send(a.count, 1024))
        record("zmq_push_pull", lambda: zmq_push_pull(a.count))
        record("korinet_send", lambda: korinet_send(slow))
        record("tinyproto_send", lambda: tinyproto_send(slow))
        for name, f in (("steadfast", steadfast_rtt), ("zmq_req_rep", zmq_rtt), ("korinet", korinet_rtt)):
            s = f(a.round_trips)
            if s is not None:
                rtts.setdefault(f"{name}_p50_us", []).append(percentile(s, 0.5) * 1e6)
                rtts.setdefault(f"{name}_p99_us", []).append(percentile(s, 0.99) * 1e6)
        print(
            f"run {r + 1}: "
            + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items())
            + " msgs/s; "
            + ", ".join(f"{k} {v[-1]:.1f}" for k, v in rtts.items()),
            flush=True,
        )

    med = {k: statistics.median(v) for k, v in {**runs, **rtts}.items()}
    print(f"\nmedians of {a.runs} runs, 64-byte messages, loopback:")
    for k in runs:
        print(f"  {k:22} {med[k]:>12,.0f} msgs/s")
    for k in rtts:
        print(f"  {k:22} {med[k]:>12.1f} us")
    z = med.get("zmq_push_pull")
    if z:
        med["ratio_send_vs_zmq_push_pull"] = med["steadfast_send"] / z
        med["ratio_send_many_vs_zmq_push_pull"] = med["steadfast_send_many"] / z
        print(f"  send / pyzmq PUSH/PULL       {med['ratio_send_vs_zmq_push_pull']:.2f}  (goal >= 0.5)")
        print(f"  send_many / pyzmq PUSH/PULL  {med['ratio_send_many_vs_zmq_push_pull']:.2f}  (goal >= 1)")
    if "zmq_req_rep_p50_us" in med:
        med["ratio_rtt_p50_vs_zmq_req_rep"] = med["steadfast_p50_us"] / med["zmq_req_rep_p50_us"]
        print(f"  request/response p50 / pyzmq REQ/REP  {med['ratio_rtt_p50_vs_zmq_req_rep']:.2f}  (goal <= 1)")
    if a.json:
        print(json.dumps({k: round(v, 3) for k, v in med.items()}))


if __name__ == "__main__":
    main()
