"""The asyncio API, and its cancellation safety: a cancelled recv took nothing, a cancelled
send queued nothing."""

from __future__ import annotations

import asyncio
import select
from typing import List

import pytest

import steadfast
import steadfast.aio as sf


def run(coro: "asyncio.Future[None] | asyncio.Task[None] | object") -> None:
    asyncio.run(coro)  # type: ignore[arg-type]


def test_connect_send_recv_iterate() -> None:
    async def main() -> None:
        async with await sf.Server.bind(["127.0.0.1:0"]) as server:
            async with await sf.Client.connect(server.addresses[0], name="aio") as client:
                receipt = await client.send(b"hello")
                peer = await server.accept(timeout=5)
                assert peer.name == "aio"
                assert (await peer.recv(timeout=5)).body == b"hello"
                await receipt.wait(timeout=5)
                await client.send_many([b"a", b"b", b"c"])
                got: List[bytes] = []
                async for m in peer:
                    got.append(m.body)
                    if len(got) == 3:
                        break
                assert got == [b"a", b"b", b"c"]
                await client.send_value([1, {"k": "v"}])
                assert await peer.recv_value(timeout=5) == [1, {"k": "v"}]
                with pytest.raises(steadfast.Timeout):
                    await peer.recv(timeout=0.05)
                await client.flush(timeout=5)

    run(main())


def test_cancelled_recv_takes_nothing() -> None:
    """Recvs cancelled at every point of their wait, as the message they wait for arrives:
    every message is received exactly once, in order."""
    n = 2_000

    async def main() -> None:
        server = await sf.Server.bind(["127.0.0.1:0"])
        client = await sf.Client.connect(server.addresses[0])
        peer = await server.accept(timeout=5)
        got: List[int] = []
        cancelled = 0
        for i in range(n):
            waiting = asyncio.create_task(peer.recv())
            await asyncio.sleep(0)  # it starts waiting
            await client.send(f"{i}")
            for _ in range(i % 5):  # then is cancelled 0 to 4 loop turns later
                await asyncio.sleep(0)
            waiting.cancel()
            try:
                got.append(int((await waiting).body))
            except asyncio.CancelledError:
                cancelled += 1
                got.append(int((await peer.recv(timeout=5)).body))
        assert got == list(range(n))
        assert cancelled > 0
        # And timeouts through asyncio.wait_for cancel it the same way.
        for i in range(200):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(peer.recv(), timeout=0.001)
            await client.send(f"late {i}")
            assert (await peer.recv(timeout=5)).body == f"late {i}".encode()
        await client.close()
        await server.shutdown(drain=0.0)

    run(main())


def test_cancelled_send_queues_nothing() -> None:
    async def main() -> None:
        server = await sf.Server.bind(["127.0.0.1:0"])
        client = await sf.Client.connect(server.addresses[0])
        peer = await server.accept(timeout=5)
        # Fill the outbox: nobody reads on the server yet.
        sent = 0
        while True:
            try:
                client.try_send(b"x" * 1024)
                sent += 1
            except steadfast.Full:
                break
        waiting = asyncio.create_task(client.send(b"cancelled"))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        bodies: List[bytes] = []

        async def read() -> None:
            while len(bodies) < sent + 1:
                bodies.extend(m.body for m in await peer.recv_many(4096, timeout=10))

        reader = asyncio.create_task(read())
        after = await client.send(b"after")  # waits for room, which the reader makes
        await reader
        assert bodies == [b"x" * 1024] * sent + [b"after"]
        await after.wait(timeout=5)
        with pytest.raises(steadfast.Timeout):
            await peer.recv(timeout=0.1)
        await client.close()
        await server.shutdown(drain=0.0)

    run(main())


def test_session_lost_in_asyncio() -> None:
    async def main() -> None:
        server = await sf.Server.bind(["127.0.0.1:0"])
        client = await sf.Client.connect(server.addresses[0], max_attempts=1)
        await server.accept(timeout=5)
        receipt = await client.send(b"never taken")
        await server.shutdown(drain=0.0)
        with pytest.raises(steadfast.SessionLost) as e:
            await receipt.wait(timeout=10)
        assert [m.body for m in e.value.unacknowledged] == [b"never taken"]

    run(main())


def test_requests_between_asyncio_client_and_routes() -> None:
    server = steadfast.Server(["127.0.0.1:0"])

    @server.route("add")
    def add(args: List[int]) -> int:
        return sum(args)

    @server.route("fail")
    def fail(_: object) -> None:
        raise ValueError("no")

    async def main() -> None:
        client = await sf.Client.connect(server.addresses[0])
        assert await client.request("add", [1, 2, 3], timeout=5) == 6
        with pytest.raises(steadfast.RequestError, match="ValueError: no"):
            await client.request("fail", None, timeout=5)
        with pytest.raises(steadfast.RequestError, match="unknown route"):
            await client.request("nope", None, timeout=5)
        await client.close()

    try:
        run(main())
    finally:
        server.shutdown(drain=0.0)


def test_an_accept_cancelled_as_it_completes_leaves_the_session_to_the_next() -> None:
    async def main() -> None:
        async with await sf.Server.bind(["127.0.0.1:0"]) as server:
            task = asyncio.ensure_future(server.accept(timeout=5))
            await asyncio.sleep(0)  # the accept is under way
            # The loop is held (a blocking client, a blocking wait on the completions pipe)
            # until the accept has completed on the runtime; it is then cancelled before the
            # coroutine could see its result.
            client = steadfast.Client(server.addresses[0], name="c")
            ready, _, _ = select.select([sf._bridge().completions.fileno()], [], [], 5)
            assert ready
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            peer = await server.accept(timeout=5)
            assert peer.name == "c"
            client.close(timeout=1)

    run(main())
