"""Waiting for Kafka's acknowledgement on the event loop, without a thread per wait.

kafka-python completes a record's future on its network thread. Blocking a
pool thread on ``future.get()`` for every request costs two thread hand-offs
per request and, under load, a wait for a free pool thread (docs/PERFORMANCE.md,
the gateway). Here the coroutine sleeps on an asyncio future instead, which
the network thread settles through ``loop.call_soon_threadsafe`` once the
broker has answered; the record's own ``get`` then gives its coordinates or
raises why it was not written, exactly as the blocking wait would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import suppress

from starlette.concurrency import run_in_threadpool

from broker.kafka.exceptions import KafkaTimeoutError
from broker.kafka.producer import SendFuture
from broker.kafka.structs import RecordMetadata

ACK_TIMEOUT_S = 30.0
"""As long as ``Publisher.send`` waits: no answer by then is a failure (503)."""


async def started(now: Callable[[], SendFuture | None],
                  blocking: Callable[[], SendFuture]) -> SendFuture:
    """The record's future from ``now()`` (which must not block: None when it
    would, e.g. the topic's metadata not yet known), else from ``blocking()``
    on a pool thread."""
    future = now()
    if future is None:
        future = await run_in_threadpool(blocking)
    return future


async def acknowledged(future: SendFuture, timeout_s: float = ACK_TIMEOUT_S) -> RecordMetadata:
    """Wait for the broker's answer to ``future`` without blocking the loop; the
    record's metadata, or the error ``future.get`` raises (KafkaError: refused,
    or KafkaTimeoutError after ``timeout_s``)."""
    if not future.done:
        loop = asyncio.get_running_loop()
        woken: asyncio.Future[None] = loop.create_future()

        def wake() -> None:  # on kafka-python's network thread
            with suppress(RuntimeError):  # the loop closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, woken)

        future.when_done(wake)
        # A timer rather than asyncio.wait_for: no task or extra future per request.
        timer = loop.call_later(timeout_s, _expire, woken, timeout_s)
        try:
            await woken
        finally:
            timer.cancel()
    return future.get(timeout=0)


def _settle(woken: asyncio.Future[None]) -> None:
    if not woken.done():  # not timed out, nor the request cancelled
        woken.set_result(None)


def _expire(woken: asyncio.Future[None], timeout_s: float) -> None:
    if not woken.done():
        woken.set_exception(KafkaTimeoutError(
            f"send: not acknowledged by the broker in {timeout_s:g} s"))
