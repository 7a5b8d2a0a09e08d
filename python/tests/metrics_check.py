"""Run by test_metrics.py in an interpreter of its own (the Prometheus recorder is one per
process): a server's traffic, read back through ``metrics_text`` with prometheus_client's
parser. Exits non-zero, saying why, if anything is off."""

from __future__ import annotations

import sys
from typing import Dict, Tuple

from prometheus_client.parser import text_string_to_metric_families

import steadfast

Key = Tuple[str, Tuple[Tuple[str, str], ...]]


def samples(text: str) -> Dict[Key, float]:
    out: Dict[Key, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def main() -> None:
    try:
        steadfast.metrics_text()
    except steadfast.ConfigError:
        pass
    else:
        sys.exit("metrics_text answered before enable_metrics")
    steadfast.enable_metrics(node="py-1")
    steadfast.enable_metrics(node="py-1")  # again: nothing happens
    node = (("node", "py-1"),)
    before = samples(steadfast.metrics_text())
    assert before[("steadfast_messages_received_total", node)] == 0, before

    server = steadfast.Server(["127.0.0.1:0"])
    with steadfast.Client(server.addresses[0], name="m") as client:
        peer = server.accept(timeout=5)
        client.send_many([b"x" * 100] * 50)
        got = 0
        while got < 50:
            got += len(peer.recv_many(50 - got, timeout=5))
        client.flush(timeout=5)
        for i in range(7):
            peer.send(b"reply %d" % i)
        for _ in range(7):
            client.recv(timeout=5)
        peer.flush(timeout=5)
        during = samples(steadfast.metrics_text(server))
    server.shutdown(drain=1.0)

    def value(name: str, *labels: Tuple[str, str]) -> float:
        return during.get((name, tuple(sorted(node + labels))), -1.0)

    checks = {
        "messages the server's application took": (value("steadfast_messages_received_total"), 50),
        "messages the client acknowledged": (value("steadfast_messages_sent_total"), 7),
        "connections": (value("steadfast_connections_total"), 1),
        "live sessions": (value("steadfast_sessions", ("state", "live")), 1),
    }
    for what, (got_value, want) in checks.items():
        if got_value != want:
            sys.exit(f"{what}: {got_value}, expected {want}\n{steadfast.metrics_text()}")
    if value("steadfast_bytes_received_total") < 50 * 100:
        sys.exit(f"bytes received: {value('steadfast_bytes_received_total')}")
    print("metrics ok")


if __name__ == "__main__":
    main()
