"""A Python server with its sessions in a state directory, for the kill test: it sends
messages numbered from where the restored session left off, up to a total, to the client
named "kill-test", and prints "ready PORT" and "sent N" lines on stderr."""

from __future__ import annotations

import sys

import steadfast

state, addr, total = sys.argv[1], sys.argv[2], int(sys.argv[3])
server = steadfast.Server([addr], state=state)
print(f"ready {server.addresses[0]}", file=sys.stderr, flush=True)
# A restored session is among the peers at once; a new one comes through accept.
peer = next((p for p in server.peers() if p.name == "kill-test"), None) or server.accept(timeout=30)
first = peer.next_seq or 1
print(f"resuming at {first}", file=sys.stderr, flush=True)
for i in range(first, total + 1):
    peer.send(f"durable {i}")
    if i % 500 == 0:
        print(f"sent {i}", file=sys.stderr, flush=True)
peer.flush(timeout=60)
print("all acknowledged", file=sys.stderr, flush=True)
server.shutdown(drain=1.0)
