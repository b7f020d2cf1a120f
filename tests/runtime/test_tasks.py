"""runtime.tasks.cancel_and_wait: stopping a task always ends, even one that swallowed its
cancellation the way Python 3.11's ``asyncio.wait_for`` does (CPython gh-86296)."""

from __future__ import annotations

import asyncio
import gc
import sys

import pytest

from runtime.tasks import cancel_and_wait


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again_until_it_ends() -> None:
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                swallowed += 1
                if swallowed == 3:
                    raise

    task = asyncio.create_task(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(10):  # a bound for the test, never reached when it works
        await cancel_and_wait(task)
    assert task.cancelled()
    assert swallowed == 3


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="wait_for was rewritten in 3.12")
async def test_a_listener_that_lost_its_cancellation_inside_wait_for_is_still_stopped() -> None:
    """The race that hung CI: the awaited result and the cancellation arrive together."""
    loop = asyncio.get_running_loop()
    ack: asyncio.Future[int] = loop.create_future()
    listened_on = asyncio.Event()

    async def listener() -> None:
        await asyncio.wait_for(ack, 10)  # noqa: TID251 - the hazard itself, on purpose
        listened_on.set()
        await asyncio.sleep(3600)  # listening for the next message

    task = asyncio.create_task(listener())
    await asyncio.sleep(0)
    ack.set_result(1)
    task.cancel()  # same loop step as the result: 3.11's wait_for returns the result
    await asyncio.sleep(0.01)
    assert listened_on.is_set(), "this Python's wait_for did not lose the cancellation"
    assert not task.done()
    async with asyncio.timeout(10):
        await cancel_and_wait(task)
    assert task.cancelled()


async def test_failed_and_finished_tasks_are_taken_without_raising_or_a_never_retrieved_log() -> (
    None
):
    reported: list[dict[str, object]] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))

    async def fails() -> None:
        raise RuntimeError("boom")

    async def ends() -> int:
        return 1

    failed, ended = asyncio.create_task(fails()), asyncio.create_task(ends())
    await asyncio.sleep(0)
    await cancel_and_wait([failed, ended])
    del failed, ended
    gc.collect()
    await asyncio.sleep(0)
    loop.set_exception_handler(None)
    assert reported == []


async def test_the_callers_own_cancellation_is_not_swallowed() -> None:
    release = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await asyncio.sleep(3600)
        finally:
            await release.wait()  # cleaning up takes a while

    inner = asyncio.create_task(slow_to_stop())
    await asyncio.sleep(0)
    stopper = asyncio.create_task(cancel_and_wait(inner))
    await asyncio.sleep(0.01)
    stopper.cancel()
    with pytest.raises(asyncio.CancelledError):
        await stopper
    release.set()
    await cancel_and_wait(inner)
    assert inner.done()
