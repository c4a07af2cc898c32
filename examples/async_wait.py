"""Await GPU work from asyncio without blocking the event loop.

Run: python examples/async_wait.py   (needs a GPU and torch)
"""

import asyncio

import torch

import extstream


async def heartbeat(stop: asyncio.Event) -> int:
    beats = 0
    while not stop.is_set():
        beats += 1
        await asyncio.sleep(0.01)
    return beats


async def main() -> None:
    stream = extstream.Stream()
    stop = asyncio.Event()
    beat = asyncio.create_task(heartbeat(stop))
    with torch.cuda.stream(torch.cuda.ExternalStream(stream.ptr)):
        torch.cuda._sleep(int(0.2 * 1.98e9))  # about 0.2 s of GPU work
    done = stream.record()
    await done  # the loop keeps running meanwhile
    stop.set()
    print(f"GPU work finished; the event loop ticked {await beat} times meanwhile")
    stream.synchronize(timeout=1)
    stream.close()


asyncio.run(main())
