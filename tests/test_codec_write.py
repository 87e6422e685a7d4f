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
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.codec import Codec, EncodingError
from broker.codec._fingerprint import HEADER_SIZE
from broker.codec._schema import DATA_CLASSES
from broker.codec._write import FromInput, Written, long_bytes
from tests.codec_strategies import CODEC, SETTINGS, records

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


@pytest.mark.parametrize(
    "name",
    # The records the router builds itself: feed decisions, quarantine records,
    # and the clock starts and access notices of a share (broker.loop.starter).
    ["safeshare.Decision", "safeshare.QuarantineRecord", "safeshare.ClockRecord",
     "safeshare.Notice"],
)
def test_other_records_write_the_same_bytes(name: str) -> None:
    @SETTINGS
    @given(records(name))
    def check(record: dict[str, Any]) -> None:
        CODEC.validate(record, name)
        assert CODEC.body_trusted(record, name) == CODEC.encode(record, name)[HEADER_SIZE:]
        assert CODEC.encode_trusted(record, name) == CODEC.encode(record, name)

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
    with pytest.raises(EncodingError, match="source_offset"):
        CODEC.encode_trusted(record, name)
    small = Codec.from_dir(ROOT / "schemas", max_message_bytes=200)
    with pytest.raises(EncodingError, match="over the limit|limit"):
        small.encode_trusted(_quarantine(original=b"x" * 300), name)


def test_an_event_off_the_fast_path_still_gets_correct_copies() -> None:
    event = CODEC.decode(CODEC.encode(CODEC.from_json(json.loads(EVENT_FILES[1].read_text()))))
    # The payload union in plain-dict form: the fast writer cannot tell the
    # branch, so the copies come from redact + validate + encode, which refuses.
    broken = dict(event, payload=event["payload"][1])
    with pytest.raises(EncodingError, match="payload"):
        CODEC.written(broken).redacted(frozenset(CLASSES))


# -- copies spliced from the inbound bytes (Codec.decode_for_routing) ------------------
#
# The router reads an event and sends redacted copies of it. When the inbound
# bytes are exactly what the writer would write for the decoded event, the
# copies are spliced from those bytes (the cuts noted while reading) instead of
# encoding the event again. Whatever the bytes, every copy must be the
# writer's: a copy of non-canonical bytes would differ from what the policy
# tests and every other router hold, and could carry data the record does not
# show (bits past 64 in a varint, a repeated map key's first value).


def writer_copies(record: Any, schema: str = CODEC_EVENT) -> Any:
    """The writer path (decode + written) the routing path must match."""
    written = CODEC.written(record, schema)
    assert type(written) is Written
    return written


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_every_example_event_is_copied_from_its_own_bytes(path: Path) -> None:
    data = CODEC.encode(CODEC.from_json(json.loads(path.read_text())))
    event, copies = CODEC.decode_for_routing(data)
    assert event == CODEC.decode(data)
    assert list(map(type, event.values())) == list(map(type, CODEC.decode(data).values()))
    assert isinstance(copies, FromInput), "an example event fell off the input-bytes path"
    writer = writer_copies(event)
    assert copies.body == data[HEADER_SIZE:] == writer.body
    assert copies.cuts == writer.cuts and copies.cuts, "cuts differ from the writer's"
    for allowed in grants(hash(path.stem) & 0xFFFF, 300):
        assert copies.redacted(allowed) == writer.redacted(allowed), (
            f"{path.stem}: copy for {sorted(allowed)} differs"
        )


@SETTINGS
@given(records(CODEC_EVENT), st.sets(st.sampled_from(CLASSES)))
def test_any_valid_event_is_copied_from_its_bytes_as_the_writer_writes_it(
    record: dict[str, Any], allowed: set[str]
) -> None:
    data = CODEC.encode(record)
    event, copies = CODEC.decode_for_routing(data)
    assert event == record
    assert isinstance(copies, FromInput)
    writer = writer_copies(event)
    assert (copies.body, copies.cuts) == (writer.body, writer.cuts)
    for grant in (frozenset(allowed), frozenset(), frozenset(CLASSES)):
        assert copies.redacted(grant) == writer.redacted(grant)
    assert copies.redacted(frozenset(allowed)) == slow_body(
        CODEC, record, frozenset(allowed), CODEC_EVENT
    )


def _varint(z: int, rng: random.Random, loose: float) -> bytes:
    """The unsigned varint ``z``, sometimes padded with 0x80 .. 0x00 groups (up
    to 10 bytes, which the readers accept; a writer never pads)."""
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    if len(out) < 10 and rng.random() < loose:
        pad = rng.randint(1, 10 - len(out))
        out[-1] |= 0x80
        out += b"\x80" * (pad - 1) + b"\x00"
    return bytes(out)


def _long(n: int, rng: random.Random, loose: float) -> bytes:
    return _varint(((n << 1) ^ (n >> 63)) & ((1 << 64) - 1), rng, loose)


def loose_body(node: Any, value: Any, rng: random.Random, loose: float) -> bytes:
    """An Avro encoding of ``value`` that fastavro reads back as ``value``, with
    the encodings no writer makes chosen at rate ``loose``: padded varints,
    several blocks, negative block counts with their size, a boolean true of 2..255,
    a negative union index (fastavro counts it from the end)."""
    from broker.codec._schema import Array, Enum, Fixed, Map, Primitive, Record, Union
    from broker.codec._write import date_days, timestamp_millis

    def lng(n: int) -> bytes:
        return _long(n, rng, loose)

    if isinstance(node, Primitive):
        kind = node.kind
        if kind == "null":
            return b""
        if kind == "boolean":
            if value and rng.random() < loose:
                return bytes([rng.randint(2, 255)])
            return b"\x01" if value else b"\x00"
        if node.logical == "timestamp-millis":
            return lng(timestamp_millis(value))
        if node.logical == "date":
            return lng(date_days(value))
        if kind in ("int", "long"):
            return lng(value)
        if kind == "float":
            return struct.pack("<f", value)
        if kind == "double":
            return struct.pack("<d", value)
        raw: bytes = value.encode() if kind == "string" else value
        return lng(len(raw)) + raw
    if isinstance(node, Enum):
        return lng(node.symbols.index(value))
    if isinstance(node, Fixed):
        return bytes(value)
    if isinstance(node, Array | Map):
        items = list(value.items()) if isinstance(node, Map) else list(value)
        inner = node.values if isinstance(node, Map) else node.items

        def item(x: Any) -> bytes:
            if isinstance(node, Map):
                key: bytes = x[0].encode()
                return lng(len(key)) + key + loose_body(inner, x[1], rng, loose)
            return loose_body(inner, x, rng, loose)

        out = b""
        while items:
            take = len(items) if rng.random() >= loose else rng.randint(1, len(items))
            block, items = items[:take], items[take:]
            encoded = b"".join(item(x) for x in block)
            if rng.random() < loose:
                out += lng(-len(block)) + lng(len(encoded)) + encoded
            else:
                out += lng(len(block)) + encoded
        return out + lng(0)
    if isinstance(node, Union):
        if value is None:
            index = next(i for i, b in enumerate(node.branches) if getattr(b, "kind", "") == "null")
            branch, inner_value = node.branches[index], None
        elif len(node.non_null) > 1:
            name, inner_value = value
            index = next(
                i for i, b in enumerate(node.branches) if getattr(b, "fullname", "") == name
            )
            branch = node.branches[index]
        else:
            branch = node.non_null[0]
            index, inner_value = node.branches.index(branch), value
        if rng.random() < loose:
            index -= len(node.branches)
        return lng(index) + loose_body(branch, inner_value, rng, loose)
    assert isinstance(node, Record)
    return b"".join(loose_body(f.type, value[f.name], rng, loose) for f in node.fields)


EVENT_NODE = CODEC._entry(CODEC_EVENT).node


@SETTINGS
@given(records(CODEC_EVENT), st.integers(0, 2**32 - 1), st.sets(st.sampled_from(CLASSES)))
def test_a_loose_encoding_of_any_event_is_copied_as_the_writer_writes_it(
    record: dict[str, Any], seed: int, allowed: set[str]
) -> None:
    canonical = CODEC.encode(record)
    # The test's own writer writes the canonical bytes when it takes no liberty.
    assert CODEC.header() + loose_body(EVENT_NODE, record, random.Random(seed), 0.0) == canonical
    loose = CODEC.header() + loose_body(EVENT_NODE, record, random.Random(seed), 0.3)
    decoded = CODEC.decode(loose)
    assert decoded == record
    event, copies = CODEC.decode_for_routing(loose)
    assert event == record
    writer = writer_copies(event)
    for grant in (frozenset(allowed), frozenset(), frozenset(CLASSES)):
        assert copies.redacted(grant) == writer.redacted(grant)
    # Copied from the inbound bytes exactly when they are the writer's.
    assert isinstance(copies, FromInput) == (loose == canonical)


def test_loose_encodings_are_met_and_fall_back() -> None:
    # The property above must meet non-canonical bytes, or it tests nothing.
    record = CODEC.decode(CODEC.encode(CODEC.from_json(json.loads(EVENT_FILES[4].read_text()))))
    seen = 0
    for seed in range(50):
        loose = CODEC.header() + loose_body(EVENT_NODE, record, random.Random(seed), 0.3)
        event, copies = CODEC.decode_for_routing(loose)
        assert event == record
        assert copies.redacted(frozenset(CLASSES)) == CODEC.encode(record)[HEADER_SIZE:]
        seen += type(copies) is Written  # the writer's, not the input's
    assert seen >= 45


def test_copies_are_of_the_event_as_decoded_on_either_path() -> None:
    record = CODEC.decode(CODEC.encode(CODEC.from_json(json.loads(EVENT_FILES[4].read_text()))))
    canonical = CODEC.encode(record)
    loose = CODEC.header() + loose_body(EVENT_NODE, record, random.Random(1), 0.3)
    assert loose != canonical
    for data in (canonical, loose):
        event, copies = CODEC.decode_for_routing(data)
        event["summary"] = "changed after decoding"
        assert copies.redacted(frozenset(CLASSES)) == canonical[HEADER_SIZE:]
