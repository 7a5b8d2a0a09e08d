"""The echo server and client of the examples above, with asyncio (``steadfast.aio``).

Mirrors the loops of KoriNet's ping example and of tinyproto's connection handler
(``transmission_received`` answering with ``transmit``), none of which had an asyncio API:
the same names as :mod:`steadfast`, as coroutines. The server echoes with ``async for``
over its peer; the client sends, awaits receipts and reads the echoes.

And what asyncio code does all the time: cancelling a ``recv`` (``asyncio.wait_for`` running
out, a task cancelled). A cancelled ``recv`` took nothing: the message it was waiting for
stays for the next call. The client reads a stream of echoes through ``recv`` calls that are
cancelled just as their message arrives, and still gets every message once, in order.

Run: ``python3 examples/asyncio_echo.py`` (exits 0 when everything checked out).
"""

from __future__ import annotations

import asyncio

import steadfast.aio as sf

TIMEOUT = 5.0
STREAM = 200


async def echo(peer: sf.Peer) -> int:
    """The server's loop: every message back to its sender, until the session ends."""
    n = 0
    async for message in peer:
        await peer.send(message.body)
        n += 1
    return n


async def race_cancels(client: sf.Client) -> None:
    """``STREAM`` round trips, each echo awaited by a ``recv`` that is cancelled the moment
    the message's receipt resolves: the echo is on its way then, or arriving, or taken
    already. Whichever it was, a cancelled ``recv`` must have left the echo for the next."""
    cancelled = 0
    for i in range(STREAM):
        receipt = await client.send(f"echo {i}", timeout=TIMEOUT)
        recv = asyncio.create_task(client.recv(timeout=TIMEOUT))
        await receipt.wait(timeout=TIMEOUT)  # the server took it and is answering
        recv.cancel()
        try:
            message = await recv  # it returned before the cancel
        except asyncio.CancelledError:
            cancelled += 1
            message = await client.recv(timeout=TIMEOUT)  # so the echo is still there
        assert message.text() == f"echo {i}", (i, message.text())
    print(f"{STREAM} echoes, {cancelled} of their recv calls cancelled, none lost or doubled")


async def main() -> None:
    async with await sf.Server.bind(["127.0.0.1:0"]) as server:
        client = await sf.Client.connect(server.addresses[0], name="alice", timeout=TIMEOUT)
        peer = await server.accept(timeout=TIMEOUT)
        echoer = asyncio.create_task(echo(peer))
        async with client:
            # Echo: send, await the receipt (the server took it), read the answer.
            for i in range(3):
                receipt = await client.send(f"ping {i}")
                await receipt.wait(timeout=TIMEOUT)
                answer = await client.recv(timeout=TIMEOUT)
                assert answer.text() == f"ping {i}" and answer.seq == i + 1, answer

            # A recv cancelled while it waits takes nothing: the next one gets the message.
            waiting = asyncio.create_task(client.recv())
            done, _ = await asyncio.wait({waiting}, timeout=0.05)
            assert not done  # nothing to receive: it is waiting
            waiting.cancel()
            try:
                await waiting
                raise AssertionError("the recv was not cancelled")
            except asyncio.CancelledError:
                pass
            await client.send("after the cancel")
            answer = await client.recv(timeout=TIMEOUT)
            assert answer.text() == "after the cancel" and answer.seq == 4, answer

            # Many recvs cancelled as their echo arrives: none lost, none twice.
            await race_cancels(client)
            await client.flush(timeout=TIMEOUT)
            assert client.stats()["waiting"] == 0
        # The client closed its session: the server's loop ends.
        echoed = await asyncio.wait_for(echoer, TIMEOUT)
        assert echoed == 3 + 1 + STREAM, echoed
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
