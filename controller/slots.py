"""Run slots: at most `workers` runs at once, the others wait in arrival order (shown as Pending/Queued)."""
from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable


class Slots:
    """A FIFO of run slots: at most `size` runs at once, the rest start in arrival order."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.busy = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @contextlib.asynccontextmanager
    async def take(self, *, on_queued: Callable[[int], Awaitable[None]]) -> AsyncIterator[None]:
        if self.busy < self.size and not self._waiters:
            self.busy += 1
        else:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await on_queued(len(self._waiters) - 1)
                await waiter
            except BaseException:
                if waiter.done() and not waiter.cancelled():
                    self._release()  # the slot was handed to us as we were cancelled: pass it on
                else:
                    waiter.cancel()
                    with contextlib.suppress(ValueError):
                        self._waiters.remove(waiter)
                raise
        try:
            yield
        finally:
            self._release()

    def _release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # hand the slot over; busy stays the same
                return
        self.busy -= 1
