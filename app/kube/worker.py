"""The one thread the Secret watch's blocking calls run in: the ``kubernetes`` client is synchronous, so
every call goes to this thread and the event loop only awaits it.

A call is never left behind silently: one cancelled from the loop is still waited for, up to ``grace``
seconds (it ends by its own request timeout), and a blocked stream read is interrupted until it returns;
a call that outlives ``grace`` marks the thread abandoned, and ``close()`` then does not wait for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class ClientThread:
    """One worker thread for blocking client calls, awaited from the event loop; see the module docstring."""

    def __init__(self, grace: float, name: str = "authgate-watch") -> None:
        self._grace = grace
        self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name)
        self.abandoned = False  # a call outlived ``grace``: do not wait for the thread

    def submit(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> asyncio.Future[T]:
        return asyncio.wrap_future(self._executor.submit(fn, *args, **kwargs))

    async def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs a blocking call in the thread; waits for it even when cancelled.

        A one-shot call ends by its own request timeout, so waiting (bounded) keeps a cancelled
        watcher from leaving a thread behind that still uses the closed client.
        """
        future = self.submit(fn, *args, **kwargs)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            await asyncio.wait({future}, timeout=self._grace)
            if not future.done():
                self.abandoned = True
            elif not future.cancelled():
                future.exception()
            raise

    async def settle(self, pending: asyncio.Future[Any] | None, interrupt: Callable[[], None]) -> bool:
        """Makes a call still blocked in the thread return, within ``grace``, by calling ``interrupt``.

        ``interrupt`` (a watch's ``stop()``) may act only once the request is sent, so it is repeated
        until the call returns, and once more after. Returns False if it did not return in time.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._grace
        while pending is not None and not pending.done() and loop.time() < deadline:
            interrupt()
            await asyncio.wait({pending}, timeout=0.05)
        interrupt()
        if pending is None:
            return True
        if not pending.done():
            self.abandoned = True
            return False
        if not pending.cancelled():
            pending.exception()  # retrieved: already handled, or moot because we are stopping
        return True

    def close(self) -> None:
        self._executor.shutdown(wait=not self.abandoned, cancel_futures=True)
