"""The blocking API: sending, receiving, receipts, timeouts and errors."""

from __future__ import annotations

import threading
import time
from typing import List

import pytest

import steadfast


def test_send_recv_receipt_in_order(server: steadfast.Server) -> None:
    with steadfast.Client(server.addresses[0], name="alice") as client:
        receipts = [client.send(f"m{i}") for i in range(100)]
        peer = server.accept(timeout=5)
        assert peer.name == "alice"
        got = [peer.recv(timeout=5) for _ in range(100)]
        assert [m.body for m in got] == [f"m{i}".encode() for i in range(100)]
        assert [m.seq for m in got] == list(range(1, 101))
        receipts[-1].wait(timeout=5)
        assert all(r.acknowledged for r in receipts)


def test_the_issue_example(server: steadfast.Server) -> None:
    addr = server.addresses[0]
    with steadfast.Client(addr, name="alice") as client:
        receipt = client.send(b"hello")
        peer = server.accept(timeout=5)
        msg = peer.recv(timeout=5)
        assert (msg.body, msg.seq) == (b"hello", 1)
        receipt.wait(timeout=5)
        client.send_many([b"a", b"b"])
        got = peer.recv_many(2, timeout=5)
        while len(got) < 2:
            got += peer.recv_many(2 - len(got), timeout=5)
        assert [m.body for m in got] == [b"a", b"b"]
        client.flush(timeout=5)


def test_recv_many_is_a_partial_read(server: steadfast.Server) -> None:
    with steadfast.Client(server.addresses[0]) as client:
        client.send_many([b"1", b"2", b"3"])
        peer = server.accept(timeout=5)
        first = peer.recv_many(2, timeout=5)
        assert 1 <= len(first) <= 2
        rest: List[steadfast.Message] = []
        while len(first) + len(rest) < 3:
            rest += peer.recv_many(10, timeout=5)
        assert [m.body for m in first + rest] == [b"1", b"2", b"3"]


def test_every_wait_times_out(server: steadfast.Server) -> None:
    with pytest.raises(steadfast.Timeout):
        server.accept(timeout=0.05)
    with steadfast.Client(server.addresses[0]) as client:
        peer = server.accept(timeout=5)
        with pytest.raises(steadfast.Timeout):
            peer.recv(timeout=0.05)
        with pytest.raises(steadfast.Timeout):
            peer.recv_many(3, timeout=0.05)
        receipt = client.send(b"not taken yet")
        with pytest.raises(steadfast.Timeout):
            receipt.wait(timeout=0.05)
        with pytest.raises(steadfast.Timeout):
            client.flush(timeout=0.05)
        # Timeout is also the builtin TimeoutError, and took nothing: the message is there.
        assert issubclass(steadfast.Timeout, TimeoutError)
        assert peer.recv(timeout=5).body == b"not taken yet"
        receipt.wait(timeout=5)


def test_iteration_ends_with_the_session(server: steadfast.Server) -> None:
    client = steadfast.Client(server.addresses[0])
    for i in range(5):
        client.send(str(i))
    peer = server.accept(timeout=5)
    got: List[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(m.body for m in peer))
    reader.start()
    # close waits for the five to be taken, then ends the session: the iteration stops.
    client.close("bye", timeout=5)
    reader.join(timeout=10)
    assert not reader.is_alive()
    assert got == [b"0", b"1", b"2", b"3", b"4"]
    assert peer.ended
    with pytest.raises(steadfast.Closed):
        peer.recv(timeout=1)
    with pytest.raises(steadfast.Closed):
        client.send(b"too late")


def test_typed_values(server: steadfast.Server) -> None:
    with steadfast.Client(server.addresses[0]) as client:
        client.send_value({"op": "add", "args": [1, 2.5, "x", b"\x00"]})
        peer = server.accept(timeout=5)
        assert peer.recv_value(timeout=5) == {"op": "add", "args": [1, 2.5, "x", b"\x00"]}


def test_bodies_of_every_kind_and_a_bad_one(server: steadfast.Server) -> None:
    with steadfast.Client(server.addresses[0]) as client:
        client.send(b"b")
        client.send(bytearray(b"ba"))
        client.send(memoryview(b"mv"))
        client.send("s\u00e9")
        with pytest.raises(TypeError):
            client.send(12345)  # type: ignore[arg-type]
        peer = server.accept(timeout=5)
        assert [peer.recv(timeout=5).body for _ in range(4)] == [b"b", b"ba", b"mv", "s\u00e9".encode()]


def test_too_large_and_full(server: steadfast.Server) -> None:
    with steadfast.Client(server.addresses[0]) as client:
        with pytest.raises(steadfast.TooLarge) as e:
            client.send(b"x" * (17 << 20))
        assert e.value.size == 17 << 20 and e.value.limit < e.value.size
        peer = server.accept(timeout=5)
        # Nobody takes: try_send fills the outbox, then refuses without queuing.
        sent = 0
        with pytest.raises(steadfast.Full):
            for _ in range(1_000_000):
                client.try_send(b"y" * 1024)
                sent += 1
        assert sent > 0
        assert peer.recv(timeout=5).body == b"y" * 1024


def test_session_lost_carries_the_unacknowledged_messages() -> None:
    server = steadfast.Server(["127.0.0.1:0"])
    client = steadfast.Client(server.addresses[0], max_attempts=1)
    server.accept(timeout=5)
    receipts = [client.send(f"lost {i}") for i in range(3)]
    # Nobody on the server takes them; the server goes away without its sessions.
    server.shutdown(drain=0.0)
    with pytest.raises(steadfast.SessionLost) as e:
        receipts[0].wait(timeout=10)
    assert [m.body for m in e.value.unacknowledged] == [b"lost 0", b"lost 1", b"lost 2"]
    assert [m.seq for m in e.value.unacknowledged] == [1, 2, 3]
    assert isinstance(e.value, steadfast.Error)


def test_refused_without_the_token() -> None:
    server = steadfast.Server(["127.0.0.1:0"], token="sesame")
    try:
        with pytest.raises(steadfast.Refused) as e:
            steadfast.Client(server.addresses[0], token="wrong", timeout=5)
        assert e.value.code
        with steadfast.Client(server.addresses[0], token="sesame", timeout=5) as ok:
            ok.send(b"in")
            assert server.accept(timeout=5).recv(timeout=5).body == b"in"
    finally:
        server.shutdown(drain=0.0)


def test_recv_releases_the_gil(server: steadfast.Server) -> None:
    with steadfast.Client(server.addresses[0]) as client:
        peer = server.accept(timeout=5)
        counted = 0
        stop = threading.Event()

        def count() -> None:
            nonlocal counted
            while not stop.is_set():
                counted += 1

        t = threading.Thread(target=count)
        t.start()
        try:
            # While recv waits (0.5 s, nothing to take), the other thread runs Python code.
            with pytest.raises(steadfast.Timeout):
                peer.recv(timeout=0.5)
            during = counted
        finally:
            stop.set()
            t.join()
        assert during > 10_000, during
        client.send(b"ok")
        assert peer.recv(timeout=5).body == b"ok"


def test_stats_and_ping(server: steadfast.Server) -> None:
    with steadfast.Client(server.addresses[0]) as client:
        for i in range(10):
            client.send(b"s")
        peer = server.accept(timeout=5)
        for _ in range(10):
            peer.recv(timeout=5)
        client.flush(timeout=5)
        assert client.stats()["acknowledged"] == 10
        assert peer.stats()["received"] == 10
        assert 0 < client.ping(timeout=5) < 5
        assert client.next_seq == 11
        s = server.stats()
        assert s["connections"] == 1 and s["sessions"] == 1 and s["handshakes"] == 0
        assert s["queued_bytes"] >= 0


def test_messages_a_request_reads_past_reach_every_handle_of_the_session(server: steadfast.Server) -> None:
    with steadfast.Client(server.addresses[0], timeout=5) as client:
        peer = server.accept(timeout=5)
        r = client.send(b"hello")
        other = server.peers()[0]
        assert other == peer and other is peer
        # The request reads (and acknowledges) "hello" while it waits for a reply that
        # never comes (the client has no routes): the session's handles still get it.
        with pytest.raises(steadfast.Timeout):
            other.request("x", 1, timeout=0.3)
        r.wait(timeout=5)
        assert peer.recv(timeout=1).body == b"hello"


def test_values_with_any_keys_and_text(server: steadfast.Server) -> None:
    with steadfast.Client(server.addresses[0]) as client:
        client.send_value({1: "one", b"k": [None, True]})
        client.send(b"\xff\xfe")
        client.send("caf\u00e9")
        peer = server.accept(timeout=5)
        assert peer.recv_value(timeout=5) == {1: "one", b"k": [None, True]}
        with pytest.raises(UnicodeDecodeError):
            peer.recv(timeout=5).text()
        assert peer.recv(timeout=5).text() == "caf\u00e9"
        assert len(peer.id or "") == 32 and peer.id == client.id


def test_one_flooding_peer_cannot_keep_the_hooks_from_the_others() -> None:
    entered = threading.Event()
    release = threading.Event()
    order: List[bytes] = []
    done = threading.Event()

    class Hooks(steadfast.Handler):
        def on_message(self, peer: steadfast.Peer, message: steadfast.Message) -> None:
            entered.set()
            release.wait(10)  # the first message holds the dispatch thread until all arrived
            order.append(message.body)
            if message.body == b"b":
                done.set()

    server = steadfast.Server(["127.0.0.1:0"], handler=Hooks())
    try:
        a = steadfast.Client(server.addresses[0], name="a")
        b = steadfast.Client(server.addresses[0], name="b")
        # A's first message is being handled when A's flood and then B's message arrive.
        a.send(b"a")
        assert entered.wait(10)
        a.send_many([b"a"] * 4_999)
        b.send(b"b")
        # Wait (bounded) until the server holds the flood and B's message, then let go.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            waiting = {p.name: p.stats()["waiting"] for p in server.peers()}
            if waiting.get("a") == 4_999 and waiting.get("b") == 1:
                break
            time.sleep(0.01)
        release.set()
        assert done.wait(10)
        # B's message was handled after a batch or so of A's, not after all of them.
        assert order.index(b"b") < 1_000, order.index(b"b")
        a.close(timeout=0.1)
        b.close(timeout=0.1)
    finally:
        server.shutdown(drain=0.0)


def test_set_wait_spin_round_trips_and_bound(server: steadfast.Server) -> None:
    # With polling on or off, request/response works alike (a reply that comes
    # during the polling or after it is taken alike), and the bound is checked.
    try:
        with steadfast.Client(server.addresses[0]) as client:
            peer = server.accept(timeout=5)
            for spin in (0, 50, 1_000_000, 0):
                steadfast.set_wait_spin(spin)
                for i in range(20):
                    client.send(f"q{i}")
                    got = peer.recv(timeout=5)
                    peer.send(got.body)
                    assert client.recv(timeout=5).body == f"q{i}".encode()
        with pytest.raises(ValueError):
            steadfast.set_wait_spin(1_000_001)
        with pytest.raises(OverflowError):
            steadfast.set_wait_spin(-1)
    finally:
        steadfast.set_wait_spin(0)
