"""Awaiting a record's acknowledgement on the event loop (broker.gateway.onloop):
the wait ends only when kafka-python's network thread completes the record's
future, with its coordinates or with why it was not written. The futures are
kafka-python's own, completed from another thread as its sender does; the
gateway's tests do the same against the real broker."""

from __future__ import annotations

import asyncio
import threading

import kafka.errors as kerr
import pytest
from kafka.producer.future import FutureProduceResult, FutureRecordMetadata
from kafka.structs import TopicPartition

from broker.gateway.onloop import acknowledged, started
from broker.kafka.exceptions import KafkaError, KafkaTimeoutError
from broker.kafka.producer import SendFuture


def _record() -> tuple[FutureProduceResult, SendFuture]:
    batch = FutureProduceResult(TopicPartition("ns.ingest.school", 1))
    return batch, SendFuture(FutureRecordMetadata(batch, 2, -1, None, 3, 10, 0))


def test_the_wait_ends_only_when_the_broker_answered() -> None:
    batch, future = _record()
    answered = threading.Event()

    async def main() -> None:
        task = asyncio.ensure_future(acknowledged(future))
        await asyncio.sleep(0.2)
        assert not task.done()  # no answer yet: no coordinates, no receipt
        threading.Thread(target=lambda: (answered.set(), batch.success((40, -1, None)))).start()
        meta = await task
        assert answered.is_set()
        assert (meta.topic, meta.partition, meta.offset) == ("ns.ingest.school", 1, 42)

    asyncio.run(main())


def test_a_record_the_broker_refused_raises_why() -> None:
    batch, future = _record()

    async def main() -> None:
        task = asyncio.ensure_future(acknowledged(future))
        await asyncio.sleep(0.05)
        threading.Thread(target=batch.failure,
                         args=(kerr.TopicAuthorizationFailedError(),)).start()
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            await task

    asyncio.run(main())


def test_a_record_refused_within_its_batch_raises_too() -> None:
    """kafka-python completes a partly refused batch with success and a function
    giving each record's error: the record's own future still fails."""
    batch, future = _record()

    async def main() -> None:
        task = asyncio.ensure_future(acknowledged(future))
        await asyncio.sleep(0.05)
        threading.Thread(target=batch.success, args=(
            (40, -1, lambda i: kerr.InvalidRecordError(f"record {i}")),)).start()
        with pytest.raises(KafkaError, match="record 2"):
            await task

    asyncio.run(main())


def test_no_answer_in_time_is_a_timeout_and_a_late_answer_is_harmless() -> None:
    batch, future = _record()

    async def main() -> None:
        with pytest.raises(KafkaTimeoutError, match="not acknowledged by the broker in 0.1 s"):
            await acknowledged(future, timeout_s=0.1)
        batch.success((40, -1, None))  # the answer after the caller gave up
        await asyncio.sleep(0.05)

    asyncio.run(main())


def test_an_answer_already_there_is_not_waited_for() -> None:
    batch, future = _record()
    batch.success((7, -1, None))
    assert asyncio.run(acknowledged(future)).offset == 9


def test_a_send_that_would_block_goes_to_a_thread() -> None:
    _, future = _record()
    loop_thread: list[threading.Thread] = []
    blocking_thread: list[threading.Thread] = []

    def blocking() -> SendFuture:
        blocking_thread.append(threading.current_thread())
        return future

    async def main() -> None:
        loop_thread.append(threading.current_thread())
        assert await started(lambda: None, blocking) is future
        assert await started(lambda: future, lambda: pytest.fail("blocked")) is future

    asyncio.run(main())
    assert blocking_thread and blocking_thread[0] is not loop_thread[0]


def test_a_request_cancelled_while_waiting_leaves_nothing_behind() -> None:
    batch, future = _record()

    async def main() -> None:
        task = asyncio.ensure_future(acknowledged(future, timeout_s=0.2))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await asyncio.sleep(0.3)  # past the timeout: its timer was cancelled too
        batch.success((40, -1, None))
        await asyncio.sleep(0.05)

    asyncio.run(main())
