"""KoriNet's ping client and server, with steadfast.

Mirrors KoriNet's README example and its "connection resilience & reconnection" demo: the
client sends ``{"type": "ping", "num": n}`` in a loop and reads the server's answer, the
server reads each ping with its id (``recv(giveID=True)``) and answers ``{"status": True}``;
when the connection drops, the client reconnects by itself and the loop goes on.

With steadfast the id is the message's sequence number (``Message.seq``), and the connection
loss is real: a relay between client and server cuts the connection halfway through the
loop. The client reconnects, resumes its session, and every ping and every answer arrives
exactly once and in order; the application resends nothing.

Run: ``python3 examples/korinet_ping.py`` (exits 0 when everything checked out).
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Dict, List, Tuple

import steadfast

PINGS = 10
TIMEOUT = 5.0


class Relay:
    """A TCP relay whose connections can be cut: the network failure of KoriNet's demo."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = "127.0.0.1:%d" % self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._live: List[socket.socket] = []
        self._all: List[socket.socket] = []
        self._threads: List[threading.Thread] = []
        self.accepted = 0
        self._spawn(self._accept_loop)

    def _spawn(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept_loop(self) -> None:
        while True:
            try:
                down, _ = self._listener.accept()
            except OSError:
                return  # stopped
            up = socket.create_connection(self._upstream, timeout=TIMEOUT)
            up.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._live += [down, up]
                self._all += [down, up]
                self._spawn(self._pump, down, up)
                self._spawn(self._pump, up, down)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):  # one direction gone: the connection is gone
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def cut(self) -> None:
        """Drops every connection going through (both ends see it end)."""
        with self._lock:
            live, self._live = self._live, []
        for s in live:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def stop(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept
        except OSError:
            pass
        self._listener.close()
        self.cut()
        for t in self._threads:
            t.join(TIMEOUT)
        for s in self._all:
            s.close()


def serve(server: steadfast.Server, seen: List[Tuple[int, Dict[str, object]]]) -> None:
    """KoriNet's server loop: print each ping with its id, answer ``{"status": True}``."""
    peer = server.accept(timeout=TIMEOUT)
    for message in peer:  # until the session ends
        ping = message.value()
        print(f"server: #{message.seq} {ping}")
        seen.append((message.seq, ping))
        peer.send_value({"status": True, "num": ping["num"]})


def main() -> None:
    server = steadfast.Server(["127.0.0.1:0"])
    relay = Relay(server.addresses[0])
    seen: List[Tuple[int, Dict[str, object]]] = []
    server_thread = threading.Thread(target=serve, args=(server, seen), daemon=True)
    server_thread.start()
    try:
        with steadfast.Client(relay.address, name="pinger", timeout=TIMEOUT) as client:
            assert client.next_event(timeout=TIMEOUT) == ("connected",)
            for num in range(PINGS):
                if num == PINGS // 2:
                    print("-- the relay cuts the connection --")
                    relay.cut()
                client.send_value({"type": "ping", "num": num}, timeout=TIMEOUT)
                answer = client.recv_value(timeout=TIMEOUT)
                print(f"client: {answer}")
                assert answer == {"status": True, "num": num}, answer

            rtt = client.ping(timeout=TIMEOUT)
            assert rtt >= 0.0
            # What the client went through: the drop, and the resumption of its session.
            events = []
            while (e := client.next_event(timeout=0)) is not None:
                events.append(e[0])
            print(f"client events: {events}, ping round trip {rtt * 1000:.2f} ms")
            assert events == ["disconnected", "reconnecting", "resumed"], events
            assert client.stats()["connections"] == 2, client.stats()
            client.flush(timeout=TIMEOUT)  # the server took every ping
        server_thread.join(TIMEOUT)
        assert not server_thread.is_alive()
    finally:
        server.shutdown()
        relay.stop()

    # Every ping arrived once, in order, the connection loss notwithstanding.
    assert [seq for seq, _ in seen] == list(range(1, PINGS + 1)), seen
    assert [ping["num"] for _, ping in seen] == list(range(PINGS)), seen
    assert relay.accepted == 2, relay.accepted
    print("ok")


if __name__ == "__main__":
    main()
