"""The router's fast path writes exactly the bytes of the validating path.

``Codec.written(event).redacted(classes)`` must be byte-for-byte the body of
``Codec.encode(Codec.redact(event, classes)[0])`` — a subscriber's copy that
differed would leak a field or break a reader. Checked over every example
event with many grants, over generated records of every shape the schema
allows, and for what the fast writer refuses (it must fall back to validation,
never write guessed bytes).
"""

from __future__ import annotations

import itertools
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.codec import Codec, EncodingError
from broker.codec._fingerprint import HEADER_SIZE
from broker.codec._schema import DATA_CLASSES
from broker.codec._write import Written, long_bytes
from tests.test_codec_properties import CODEC, SETTINGS, records

ROOT = Path(__file__).resolve().parent.parent
EVENT_FILES = sorted((ROOT / "tests" / "data" / "events").glob("*.json"))
CLASSES = sorted(DATA_CLASSES)


def slow_body(codec: Codec, record: Any, allowed: frozenset[str], schema: str) -> bytes:
    copy, _ = codec.redact(record, allowed, schema)
    return codec.encode(copy, schema)[HEADER_SIZE:]


def grants(seed: int, n: int) -> list[frozenset[str]]:
    """Every grant of 0, 1, all-but-1 and all classes, plus ``n`` random ones."""
    out = [frozenset(), frozenset(CLASSES)]
    out += [frozenset({c}) for c in CLASSES]
    out += [frozenset(CLASSES) - {c} for c in CLASSES]
    rng = random.Random(seed)
    out += [frozenset(rng.sample(CLASSES, rng.randrange(len(CLASSES)))) for _ in range(n)]
    return out


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_every_redaction_of_the_example_events_is_byte_identical(path: Path) -> None:
    event = CODEC.decode(CODEC.encode(CODEC.from_json(json.loads(path.read_text()))))
    written = CODEC.written(event)
    assert isinstance(written, Written), "an example event fell off the fast path"
    assert written.body == CODEC.encode(event)[HEADER_SIZE:]
    for allowed in grants(hash(path.stem) & 0xFFFF, 300):
        assert written.redacted(allowed) == slow_body(CODEC, event, allowed, CODEC_EVENT), (
            f"{path.stem}: copy for {sorted(allowed)} differs"
        )


CODEC_EVENT = "safeshare.ConcernEvent"


@SETTINGS
@given(records(CODEC_EVENT), st.sets(st.sampled_from(CLASSES)))
def test_any_valid_event_and_grant_writes_the_same_bytes(
    record: dict[str, Any], allowed: set[str]
) -> None:
    CODEC.validate(record)
    written = CODEC.written(record)
    assert written.redacted(frozenset(allowed)) == slow_body(
        CODEC, record, frozenset(allowed), CODEC_EVENT
    )
    assert CODEC.body_trusted(record) == CODEC.encode(record)[HEADER_SIZE:]


@pytest.mark.parametrize("name", ["safeshare.Decision", "safeshare.QuarantineRecord"])
def test_other_records_write_the_same_bytes(name: str) -> None:
    @SETTINGS
    @given(records(name))
    def check(record: dict[str, Any]) -> None:
        CODEC.validate(record, name)
        assert CODEC.body_trusted(record, name) == CODEC.encode(record, name)[HEADER_SIZE:]

    check()


def test_longs_follow_the_avro_zigzag_varint() -> None:
    # Avro spec, "Primitive Types": 0 -> 00, -1 -> 01, 1 -> 02, -64 -> 7f, 64 -> 80 01
    assert [long_bytes(n).hex() for n in (0, -1, 1, -64, 64)] == ["00", "01", "02", "7f", "8001"]
    for n in itertools.chain(range(-20000, 20000, 7), (2**63 - 1, -(2**63), 1_700_000_000_000)):
        record = _quarantine(source_offset=n)
        name = "safeshare.QuarantineRecord"
        assert CODEC.body_trusted(record, name) == CODEC.encode(record, name)[HEADER_SIZE:]


def _quarantine(**changes: Any) -> dict[str, Any]:
    record = {
        "original": b"\x00\x01",
        "original_size": 2,
        "source_topic": "t",
        "source_partition": 0,
        "source_offset": 5,
        "reason": "UNDECODABLE",
        "detail": "x",
        "quarantined_at": datetime(2026, 1, 1, tzinfo=UTC),
    }
    record.update(changes)
    return record


def test_a_record_the_fast_writer_cannot_place_is_validated_not_guessed() -> None:
    name = "safeshare.QuarantineRecord"
    record = _quarantine(source_offset="5")  # a string where a long belongs
    with pytest.raises(EncodingError, match="source_offset"):
        CODEC.body_trusted(record, name)
    naive = _quarantine(quarantined_at=datetime(2026, 1, 1))  # noqa: DTZ001 - the point
    with pytest.raises(EncodingError, match="quarantined_at"):
        CODEC.body_trusted(naive, name)


def test_an_event_off_the_fast_path_still_gets_correct_copies() -> None:
    event = CODEC.decode(
        CODEC.encode(CODEC.from_json(json.loads(EVENT_FILES[1].read_text())))
    )
    # The payload union in plain-dict form: the fast writer cannot tell the
    # branch, so the copies come from redact + validate + encode, which refuses.
    broken = dict(event, payload=event["payload"][1])
    with pytest.raises(EncodingError, match="payload"):
        CODEC.written(broken).redacted(frozenset(CLASSES))
