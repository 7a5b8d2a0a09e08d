"""A Python server with its sessions in a state directory or PostgreSQL (then with a node
name), for the kill tests: it sends messages numbered from where the restored session left
off, up to a total, to the client named "kill-test", and prints "ready ADDR", "resuming at N",
"sent N" and "all acknowledged" lines on stderr.

    durable_server.py STATE ADDR TOTAL [NODE]"""

from __future__ import annotations

import sys

import steadfast

state, addr, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
node = sys.argv[4] if len(sys.argv) > 4 else None
server = steadfast.Server([addr], state=state, node=node)
print(f"ready {server.addresses[0]}", file=sys.stderr, flush=True)


def find() -> steadfast.Peer:
    # A session restored from a state directory is among the peers at once; a new one, or one
    # taken over from another server of a fleet, comes with an event.
    for p in server.peers():
        if p.name == "kill-test":
            return p
    while True:
        e = server.next_event(timeout=30)
        assert e is not None, "no client came"
        if e.kind in ("connected", "resumed") and e.peer.name == "kill-test":
            return e.peer


peer = find()
first = peer.next_seq or 1
print(f"resuming at {first}", file=sys.stderr, flush=True)
for i in range(first, total + 1):
    peer.send(f"durable {i}")
    if i % 500 == 0:
        print(f"sent {i}", file=sys.stderr, flush=True)
peer.flush(timeout=60)
print("all acknowledged", file=sys.stderr, flush=True)
server.shutdown(drain=1.0)
