"""The request window shared by two chunks in progress on two event loops (two threads)."""

from __future__ import annotations

import asyncio
import threading
import time

from imgedit_ds.edit.base import CHUNK_ORDER
from imgedit_ds.edit.http import SharedLimit


def test_limit_holds_across_loops_and_serves_the_earlier_chunk_first() -> None:
    limit = SharedLimit(3)
    lock = threading.Lock()
    active, peak, starts = 0, 0, []

    async def request(chunk: int, seconds: float) -> None:
        nonlocal active, peak
        async with limit.slot():
            with lock:
                active += 1
                peak = max(peak, active)
                starts.append((time.monotonic(), chunk))
            await asyncio.sleep(seconds)
            with lock:
                active -= 1

    def chunk(order: int, delay: float) -> None:
        CHUNK_ORDER.set(order)
        time.sleep(delay)
        async def all_requests() -> None:
            # the first request of each chunk is slow, like the tail that ends a chunk
            await asyncio.gather(request(order, 0.3), *(request(order, 0.02) for _ in range(8)))

        asyncio.run(all_requests())  # a loop of its own, as datasets.map makes in each thread

    threads = [threading.Thread(target=chunk, args=(0, 0.0)), threading.Thread(target=chunk, args=(1, 0.1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert peak == 3 and active == 0 and len(starts) == 18
    order = [c for _, c in sorted(starts)]
    assert order[:9] == [0] * 9  # chunk 1 waits while chunk 0 still has requests to send ...
    first_of_1 = min(t for t, c in starts if c == 1)
    last_of_0 = max(t for t, c in starts if c == 0)
    assert first_of_1 - last_of_0 < 0.25  # ... then fills the slots chunk 0's slow tail leaves idle


def test_a_cancelled_waiter_gives_its_slot_back() -> None:
    async def main() -> None:
        limit = SharedLimit(1)
        await limit.acquire()
        waiter = asyncio.ensure_future(limit.acquire())
        await asyncio.sleep(0.01)
        waiter.cancel()
        limit.release()
        await asyncio.sleep(0.01)
        await asyncio.wait_for(limit.acquire(), 1.0)  # the slot was not lost with the cancelled waiter

    asyncio.run(main())


def test_waiters_of_the_earlier_chunk_are_served_first() -> None:
    async def main() -> list[int]:
        limit, served = SharedLimit(1), []
        await limit.acquire()

        async def wait(order: int) -> None:
            CHUNK_ORDER.set(order)
            await limit.acquire()
            served.append(order)
            limit.release()

        later = asyncio.ensure_future(wait(512))  # the later chunk asks first ...
        await asyncio.sleep(0.01)
        earlier = asyncio.ensure_future(wait(0))  # ... the earlier chunk second
        await asyncio.sleep(0.01)
        limit.release()
        await asyncio.gather(later, earlier)
        return served

    assert asyncio.run(main()) == [0, 512]
