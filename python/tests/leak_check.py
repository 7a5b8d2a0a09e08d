"""Run by test_leaks.py in a process of its own: many rounds of servers, clients and event
loops, then the process's open files and Python threads must be what they were after the
first round. Prints "fds A B threads C D"."""

from __future__ import annotations

import asyncio
import gc
import os
import threading

import steadfast
import steadfast.aio as sf


class Hooks(steadfast.Handler):
    def __init__(self) -> None:
        self.messages = 0

    def on_message(self, peer: steadfast.Peer, message: steadfast.Message) -> None:
        self.messages += 1


def blocking_round() -> None:
    hooks = Hooks()
    server = steadfast.Server(["127.0.0.1:0"], handler=hooks, tick=0.05)

    @server.route("echo")
    def echo(v: object) -> object:
        return v

    with steadfast.Client(server.addresses[0]) as client:
        assert client.request("echo", [1], timeout=5) == [1]
    with steadfast.Client(server.addresses[0]) as client:
        client.send(b"x").wait(timeout=5)
    server.shutdown(drain=0.5)


async def aio_round() -> None:
    server = await sf.Server.bind(["127.0.0.1:0"])
    client = await sf.Client.connect(server.addresses[0])
    await client.send(b"y")
    peer = await server.accept(timeout=5)
    assert (await peer.recv(timeout=5)).body == b"y"
    await client.close()
    await server.shutdown(drain=0.0)


def counts() -> tuple[int, int]:
    gc.collect()
    return len(os.listdir("/proc/self/fd")), threading.active_count()


blocking_round()
asyncio.run(aio_round())
fds0, threads0 = counts()
for _ in range(30):
    blocking_round()
    asyncio.run(aio_round())
fds1, threads1 = counts()
print(f"fds {fds0} {fds1} threads {threads0} {threads1}", flush=True)
