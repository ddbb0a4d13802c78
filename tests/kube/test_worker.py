"""The watch's worker thread on its own: blocking calls awaited from the loop, none left behind silently."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.kube.worker import ClientThread

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_a_call_runs_in_the_named_thread_and_returns_its_result() -> None:
    thread = ClientThread(grace=1.0)
    try:
        assert await thread.call(lambda: threading.current_thread().name) == "authgate-watch_0"
        assert await thread.call(int, "7") == 7
    finally:
        thread.close()
    assert not thread.abandoned


async def test_a_cancelled_call_is_waited_for_and_abandoned_only_past_the_grace() -> None:
    release = threading.Event()
    thread = ClientThread(grace=0.2)
    task = asyncio.ensure_future(thread.call(release.wait, 30))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert thread.abandoned  # still blocked after the grace: close() must not wait for it
    release.set()
    thread.close()


async def test_settle_interrupts_a_blocked_call_until_it_returns() -> None:
    release = threading.Event()
    thread = ClientThread(grace=5.0)
    try:
        pending = thread.submit(release.wait, 30)
        assert await thread.settle(pending, release.set)
        assert pending.done() and not thread.abandoned
        assert await thread.settle(None, lambda: None)
    finally:
        thread.close()


async def test_settle_gives_up_after_the_grace_and_marks_the_thread_abandoned() -> None:
    release = threading.Event()
    interrupts: list[int] = []
    thread = ClientThread(grace=0.2)
    pending = thread.submit(release.wait, 30)
    assert not await thread.settle(pending, lambda: interrupts.append(1))
    assert thread.abandoned and len(interrupts) >= 2
    release.set()
    thread.close()
