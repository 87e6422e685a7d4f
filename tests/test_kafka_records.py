"""The router's record append (broker.kafka._kafka_python.records) writes kafka-python's bytes.

A feed reader in any language parses these batches, so the fast append must
build exactly what kafka-python's own builder builds: the same records, the
same batch header (counts, last offset delta, timestamps, CRC), and "full" at
the same record. (It reaches kafka-python 3.0.12's builder internals:
tests/test_kafka_python_pin.py fails first under another version.)
"""

from __future__ import annotations

import random

import pytest
from kafka.record.default_records import DefaultRecordBatch
from kafka.record.memory_records import MemoryRecordsBuilder

from broker.kafka._kafka_python.records import append_record, append_record_plain


def _builder(batch_size: int) -> MemoryRecordsBuilder:
    records = MemoryRecordsBuilder(magic=2, compression_type=0, batch_size=batch_size)
    records.set_producer_state(producer_id=7, producer_epoch=3, base_sequence=11,
                               is_transactional=True)  # fmt: skip
    return records


def _fill(append, batch_size: int, seed: int) -> tuple[bytes, list[bool]]:  # type: ignore[no-untyped-def]
    """Append a seeded run of records of every size class until the batch refuses
    several; the closed batch's bytes and what each append answered."""
    rng = random.Random(seed)
    records = _builder(batch_size)
    t = 1_765_000_000_000
    answers = []
    for _ in range(400):
        t += rng.choice((0, 0, 1, 7, 300, 9_000))  # deltas of one and two bytes and more
        if rng.random() < 0.05:
            t -= 5  # a clock step back: a negative delta
        key = rng.randbytes(rng.choice((1, 16, 36, 200)))
        value = rng.randbytes(rng.choice((0, 1, 63, 64, 127, 128, 1_000, 8_191, 8_192, 20_000)))
        answers.append(append(records, t, key, value))
    records.close()
    return bytes(records.buffer()), answers


@pytest.mark.parametrize("batch_size", [16_384, 1 << 20])
@pytest.mark.parametrize("seed", range(4))
def test_the_fast_append_builds_kafka_pythons_batch(batch_size: int, seed: int) -> None:
    fast, fast_answers = _fill(append_record, batch_size, seed)
    plain, plain_answers = _fill(append_record_plain, batch_size, seed)
    assert False in plain_answers  # the batch filled: "full" is compared too
    assert fast_answers == plain_answers
    assert fast == plain
    batch = DefaultRecordBatch(fast)
    assert batch.validate_crc()
    assert len(list(batch)) == sum(plain_answers)


def test_a_closed_batch_takes_nothing() -> None:
    records = _builder(1 << 20)
    assert append_record(records, 1, b"k", b"v")
    records.close()
    assert not append_record(records, 2, b"k", b"v")
