"""Exactly once and in order through a fault proxy (the Rust CLI's `chaos`) that cuts the link
hundreds of times, between a Python side and a Rust side, both ways round."""

from __future__ import annotations

import subprocess
import threading
from typing import List

import steadfast

from conftest import Proc, addr_after, start_chaos, steadfast_bin

# Each connection carries 200 to 1,000 bytes before the proxy cuts it (RST or FIN): 5,000
# messages take some 250 to 300 connections.
CUTS = ["--min-bytes", "200", "--max-bytes", "1000", "--seed", "7"]
N = 5_000


def test_python_client_to_rust_server_through_cuts(procs: List[Proc]) -> None:
    serve = Proc([steadfast_bin(), "serve", "--listen", "127.0.0.1:0"])
    procs.append(serve)
    upstream = addr_after(serve.wait_for("listening on"), "listening on ")
    proxy, chaos = start_chaos(procs, upstream, *CUTS)
    lines: List[bytes] = []
    reader = threading.Thread(target=lambda: lines.extend(_lines(serve, N)))
    reader.start()
    with steadfast.Client(proxy, name="py") as client:
        last = client.send_many([f"line {i:06}" for i in range(N)], timeout=120)
        assert last is not None
        last.wait(timeout=120)
        assert client.stats()["connections"] > 200
    reader.join(timeout=60)
    assert lines == [f"line {i:06}".encode() for i in range(N)]
    assert len([f for f in chaos.out if f.startswith("fault:")]) >= 200, chaos.out[-3:]


def _lines(p: Proc, n: int) -> List[bytes]:
    out: List[bytes] = []
    assert p.p.stdout is not None
    while len(out) < n:
        line = p.p.stdout.readline()
        if not line:
            break
        out.append(line.rstrip(b"\n"))
    return out


def test_rust_client_to_python_server_through_cuts(procs: List[Proc]) -> None:
    server = steadfast.Server(["127.0.0.1:0"])
    try:
        proxy, chaos = start_chaos(procs, server.addresses[0], *CUTS)
        data = "".join(f"record {i:06}\n" for i in range(N)).encode()
        send = subprocess.Popen(
            [steadfast_bin(), "send", proxy, "--name", "rust"],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        writer = threading.Thread(target=lambda: send.communicate(data, timeout=120))
        writer.start()
        peer = server.accept(timeout=30)
        assert peer.name == "rust"
        got: List[bytes] = []
        while len(got) < N:
            got.extend(m.body for m in peer.recv_many(1024, timeout=60))
        writer.join(timeout=120)
        assert send.returncode == 0
        assert got == [f"record {i:06}".encode() for i in range(N)]
        assert len([f for f in chaos.out if f.startswith("fault:")]) >= 200, chaos.out[-3:]
        assert peer.try_recv() is None
    finally:
        server.shutdown(drain=0.0)
