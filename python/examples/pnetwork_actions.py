"""pnetwork's named packets and bound actions, with steadfast.

Mirrors pnetwork's README: ``createPacket("PACKETNAME", {...})`` sends a packet whose name
says what the receiving side does with it, ``bindAction("PACKETNAME", SomeBind(...))`` binds
that name to an action whose ``run(data)`` runs when such a packet arrives, and the server
tells its clients apart by the token it handed each one at the handshake.

With steadfast a bound action is a route, ``@server.route("PACKETNAME")`` (a function, or a
bound method like ``Bind.run``), and a packet is ``peer.request("PACKETNAME", value)``, which
returns the action's return value, or ``peer.notify(...)`` when no answer is wanted. Values
are typed (MessagePack): dicts, lists, str, bytes, int, float, bool and None arrive as
themselves. An action that takes two arguments gets the sending :class:`steadfast.Peer`
first; its ``id`` is the session's, chosen by the server (it is no credential: resuming a
session takes a secret that never leaves the client and the server).

Run: ``python3 examples/pnetwork_actions.py`` (exits 0 when everything checked out).
"""

from __future__ import annotations

import threading
from typing import Any, Dict, List

import steadfast

TIMEOUT = 5.0


class Bind:
    """pnetwork's ``Bind``: an action with a name whose ``run(data)`` handles a packet."""

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, data: Any) -> Any:
        raise NotImplementedError


class TestAction(Bind):
    """The README's ``testAction``: remembers what it was run with."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.test = "test"
        self.runs: List[Any] = []
        self.ran = threading.Event()

    def run(self, data: Any = "yeet") -> Any:
        self.runs.append(data)
        self.ran.set()
        return None


def main() -> None:
    server = steadfast.Server(["127.0.0.1:0"])

    # bindAction("[PACKET NAME]", testAction("trigger test")): a bound method as the route.
    test_action = TestAction("trigger test")
    server.route("[PACKET NAME]")(test_action.run)

    @server.route("PACKETNAME")
    def packet(data: Dict[str, Any]) -> Dict[str, Any]:
        # The value arrives typed, as the client built it.
        assert isinstance(data["data"], str) and isinstance(data["count"], int), data
        return {"example": data["example"].upper(), "count": data["count"] + 1}

    @server.route("echo")
    def echo(value: Any) -> Any:
        return value

    @server.route("whoami")
    def whoami(peer: steadfast.Peer, _: None) -> Dict[str, Any]:
        # pnetwork's token: which connection a packet came from.
        return {"id": peer.id, "name": peer.name}

    @server.route("fail")
    def fail(value: int) -> int:
        return 100 // value

    try:
        with steadfast.Client(server.addresses[0], name="alice", timeout=TIMEOUT) as alice, \
                steadfast.Client(server.addresses[0], name="bob", timeout=TIMEOUT) as bob:
            # createPacket("PACKETNAME", {...}) and the action's answer.
            reply = alice.request(
                "PACKETNAME",
                {"example": "this is a message", "data": "this is also data", "count": 41},
                timeout=TIMEOUT,
            )
            assert reply == {"example": "THIS IS A MESSAGE", "count": 42}, reply

            # Typed values go both ways unchanged (a tuple comes back as a list).
            value = {
                "text": "héllo",
                "bytes": b"\x00\xff",
                "int": -(2**40),
                "float": 0.25,
                "bool": True,
                "none": None,
                "list": [1, "two", [3.0]],
                "nested": {"deep": {"er": [b"x"]}},
            }
            assert alice.request("echo", value, timeout=TIMEOUT) == value
            assert alice.request("echo", (1, 2), timeout=TIMEOUT) == [1, 2]

            # A packet with no answer: the bound action runs on the server.
            alice.notify("[PACKET NAME]", {"trigger": "test"}).wait(timeout=TIMEOUT)
            assert test_action.ran.wait(TIMEOUT)
            assert test_action.runs == [{"trigger": "test"}], test_action.runs

            # Each client is told apart by its session.
            a = alice.request("whoami", None, timeout=TIMEOUT)
            b = bob.request("whoami", None, timeout=TIMEOUT)
            assert a == {"id": alice.id, "name": "alice"}, a
            assert b == {"id": bob.id, "name": "bob"}, b
            assert a["id"] != b["id"]

            # An action that fails, and a packet nobody bound, come back as RequestError.
            assert alice.request("fail", 4, timeout=TIMEOUT) == 25
            try:
                alice.request("fail", 0, timeout=TIMEOUT)
                raise AssertionError("expected RequestError")
            except steadfast.RequestError as e:
                assert "ZeroDivisionError" in str(e), e
            try:
                bob.request("no such packet", {}, timeout=TIMEOUT)
                raise AssertionError("expected RequestError")
            except steadfast.RequestError as e:
                assert "unknown route" in str(e), e
            print(f"alice {a['id']}, bob {b['id']}: every action answered")
    finally:
        server.shutdown()
    print("ok")


if __name__ == "__main__":
    main()
