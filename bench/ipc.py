"""`malv bench ipc`: Call/ReplyRecv round trips per second between two tasks,
beside an asyncio ping-pong over two `asyncio.Queue`s in the same run."""

from __future__ import annotations

import asyncio
import time

from bench.report import Figure
from kernel import Kernel, Message
from kernel.traps import Call, NewEndpoint, NewReply, Recv, Reply, ReplyRecv, Spawn, WaitPid


def _client(n: int):
    def client(proc):
        ep = yield NewEndpoint()
        server = yield Spawn(_server, caps={"ep": ep}, name="server")
        call = Call(ep, Message("ping", 0))  # traps are values: build once, yield often
        for _ in range(n):
            yield call
        yield Call(ep, Message("stop"))
        yield WaitPid(server)

    return client


def _server(proc):
    ep = proc.caps["ep"]
    reply = yield NewReply()
    r = yield Recv(ep, reply)
    answer = ReplyRecv(ep, reply, Message("pong", 0))
    while r.msg.label != "stop":
        r = yield answer
    yield Reply(reply, Message("bye"))


def kernel_round_trips(n: int) -> float:
    k = Kernel(seed=0)
    try:
        k.spawn(_client(n), name="client")
        t0 = time.perf_counter()
        k.run()
        return n / (time.perf_counter() - t0)
    finally:
        k.shutdown()


def asyncio_round_trips(n: int) -> float:
    async def main() -> float:
        to_server: asyncio.Queue = asyncio.Queue()
        to_client: asyncio.Queue = asyncio.Queue()

        async def server() -> None:
            while True:
                item = await to_server.get()
                if item is None:
                    return
                await to_client.put(item)

        task = asyncio.create_task(server())
        t0 = time.perf_counter()
        for i in range(n):
            await to_server.put(i)
            await to_client.get()
        elapsed = time.perf_counter() - t0
        await to_server.put(None)
        await task
        return n / elapsed

    return asyncio.run(main())


def run(quick: bool = False) -> list[Figure]:
    n = 20_000 if quick else 100_000
    best_k = max(kernel_round_trips(n) for _ in range(3))
    best_a = max(asyncio_round_trips(n) for _ in range(3))
    return [
        Figure("ipc.call_replyrecv", best_k, "round trips/s", baseline=best_a,
               baseline_name="asyncio.Queue ping-pong", target=">= 2x"),
    ]  # fmt: skip
