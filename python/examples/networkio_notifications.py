"""networkio's notification queue and partial reads, with steadfast.

Mirrors networkio's README: the application does not read sockets, it reads a queue of
notifications (``<-networkio.MasterMessageQueue`` gives the id of a connection that has data),
and then reads from that connection as much as it wants: everything, "or just 1 or 2 or
whatever it wants, and the rest will be there to be read". A message counts as read when the
peer acknowledges it, and the sender is notified when it was received. The server greets
each client with ``WriteToConn("Hello")``.

With steadfast the notification queue is ``server.next_event()``: a ``"messages"`` event
names a peer with messages waiting (one event until the application reads from that peer
again), a ``"connected"`` event a new session. A partial read is ``peer.recv_many(n)``: at
least one message, at most ``n``, the rest stay queued. Each ``send`` returns a receipt that
resolves when the other side's application has taken the message, and not before.

Run: ``python3 examples/networkio_notifications.py`` (exits 0 when everything checked out).
"""

from __future__ import annotations

from collections import deque
from typing import Deque, Dict, List, Optional

import steadfast

TIMEOUT = 5.0
EACH = 5  # messages per client
BATCH = 2  # the most a read takes


def greet(event: steadfast.Event, hellos: List[steadfast.Receipt]) -> None:
    """networkio's ``conn.WriteToConn("Hello")`` for every new session."""
    if event.kind == "connected":
        hellos.append(event.peer.send("Hello"))


def read_notified(
    server: steadfast.Server,
    ready: Deque[steadfast.Peer],
    expected: int,
    hellos: List[steadfast.Receipt],
) -> Dict[Optional[str], List[List[str]]]:
    """The worker of networkio's client: takes notifications, reads at most ``BATCH``
    messages per turn from a notified peer and comes back later for the rest (the peers with
    unread messages take turns). Returns the batches read, per client name."""
    batches: Dict[Optional[str], List[List[str]]] = {}
    turns: List[str] = []
    read = 0
    while read < expected:
        # The notification queue; waited on only when no peer has anything left to read.
        event = server.next_event(timeout=0 if ready else TIMEOUT)
        assert event is not None or ready, "no notification came"
        if event is not None:
            greet(event, hellos)
            if event.kind == "messages" and event.peer not in ready:
                ready.append(event.peer)
        if not ready:
            continue
        peer = ready.popleft()
        if peer.stats()["waiting"] == 0:
            continue  # a notification for messages read already, in an earlier turn
        batch = [m.text() for m in peer.recv_many(BATCH, timeout=TIMEOUT)]
        assert 1 <= len(batch) <= BATCH, batch
        batches.setdefault(peer.name, []).append(batch)
        turns.append(f"{peer.name}:{len(batch)}")
        read += len(batch)
        if peer.stats()["waiting"] > 0:
            ready.append(peer)  # the rest is there to be read, on its next turn
    print("turns (client:messages read):", " ".join(turns))
    return batches


def main() -> None:
    server = steadfast.Server(["127.0.0.1:0"])
    address = server.addresses[0]
    hellos: List[steadfast.Receipt] = []
    clients: List[steadfast.Client] = []
    try:
        # Alice sends five messages; the server reads two of them, and sits on the rest.
        alice = steadfast.Client(address, name="alice", timeout=TIMEOUT)
        clients.append(alice)
        receipts = [alice.send(f"alice #{k}") for k in range(EACH)]
        peer: Optional[steadfast.Peer] = None
        while peer is None:
            event = server.next_event(timeout=TIMEOUT)
            assert event is not None, "no notification came"
            greet(event, hellos)
            if event.kind == "messages":
                peer = event.peer
        first: List[str] = []
        while len(first) < 2:  # "just 1 or 2": two, however they came in
            first += [m.text() for m in peer.recv_many(2 - len(first), timeout=TIMEOUT)]
        assert first == ["alice #0", "alice #1"], first
        # Read means acknowledged: the first two are, the third is not (nobody took it).
        receipts[1].wait(timeout=TIMEOUT)
        assert receipts[0].acknowledged and not receipts[2].acknowledged
        assert alice.recv(timeout=TIMEOUT).text() == "Hello"

        # Two more clients; the notifications interleave with alice's unread messages.
        for name in ("bob", "carol"):
            client = steadfast.Client(address, name=name, timeout=TIMEOUT)
            clients.append(client)
            client.send_many([f"{name} #{k}" for k in range(EACH)], timeout=TIMEOUT)
        batches = read_notified(server, deque([peer]), expected=3 * EACH - 2, hellos=hellos)
        for who, got in batches.items():
            print(f"{who}: {got}")

        # Every message read once, in order, a few at a time.
        flat = {who: [m for batch in got for m in batch] for who, got in batches.items()}
        assert flat == {
            "alice": [f"alice #{k}" for k in range(2, EACH)],
            "bob": [f"bob #{k}" for k in range(EACH)],
            "carol": [f"carol #{k}" for k in range(EACH)],
        }, flat
        # Each sender learns its messages were read; each client read its "Hello".
        for client in clients:
            client.flush(timeout=TIMEOUT)
            if client is not alice:
                assert client.recv(timeout=TIMEOUT).text() == "Hello"
        assert all(r.acknowledged for r in receipts)
        assert len(hellos) == 3
        for hello in hellos:
            hello.wait(timeout=TIMEOUT)
    finally:
        for client in clients:
            client.close()
        server.shutdown()
    print("ok")


if __name__ == "__main__":
    main()
