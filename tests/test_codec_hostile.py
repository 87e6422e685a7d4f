"""Codec: hostile and broken bytes are refused with one clear error, never a hang,
an allocation bomb or a crash."""

from __future__ import annotations

import copy
import io
import json
import time
import tracemalloc
from typing import Any

import fastavro
import pytest

from broker.codec import (
    Codec,
    CodecError,
    DecodingError,
    UnknownSchemaError,
)
from broker.codec._fingerprint import HEADER_SIZE
from tests.codec_helpers import (
    EVENT_FILES,
    SCHEMAS,
    event_json,
    quarantine_record,
)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_dir(SCHEMAS)


@pytest.fixture
def missing(codec: Codec) -> dict[str, Any]:
    return codec.from_json(event_json("missing_episode"))

# --------------------------------------------------------------------------------------
# Hostile and broken input


def test_wrong_magic(codec: Codec, missing: dict[str, Any]) -> None:
    data = codec.encode(missing)
    for bad in (b"\xc3\x02" + data[2:], b"\x00\x01" + data[2:], b"{" + data[1:]):
        with pytest.raises(DecodingError, match="no C3 01 marker"):
            codec.decode(bad)


@pytest.mark.parametrize("size", [0, 1, 2, 9])
def test_too_short_for_a_header(codec: Codec, missing: dict[str, Any], size: int) -> None:
    data = codec.encode(missing)[:size]
    with pytest.raises(DecodingError, match="shorter than the 10-byte single-object header"):
        codec.decode(data)


def test_unknown_fingerprint(codec: Codec, missing: dict[str, Any]) -> None:
    data = codec.encode(missing)
    forged = data[:2] + bytes(8) + data[10:]
    with pytest.raises(
        UnknownSchemaError, match="no known schema has fingerprint 0000000000000000"
    ):
        codec.decode(forged)
    with pytest.raises(UnknownSchemaError):
        codec.schema_name_of(forged)


def test_every_truncation_is_refused(codec: Codec) -> None:
    for path in EVENT_FILES:
        data = codec.encode(codec.from_json(json.loads(path.read_text())))
        for end in range(HEADER_SIZE, len(data)):
            with pytest.raises(DecodingError, match="truncated"):
                codec.decode(data[:end])


def test_trailing_bytes_are_refused(codec: Codec, missing: dict[str, Any]) -> None:
    data = codec.encode(missing)
    with pytest.raises(DecodingError, match="^3 trailing byte"):
        codec.decode(data + b"\x00\x00\x00")


def test_another_record_type_is_refused(codec: Codec) -> None:
    data = codec.encode(quarantine_record(), "safeshare.QuarantineRecord")
    with pytest.raises(
        DecodingError, match="holds a safeshare.QuarantineRecord, not a safeshare.ConcernEvent"
    ):
        codec.decode(data)


def test_invalid_utf8_is_refused(codec: Codec, missing: dict[str, Any]) -> None:
    missing["summary"] = "MARKERMARKER"
    data = codec.encode(missing)
    at = data.index(b"MARKERMARKER")
    bad = data[:at] + b"\xff\xfe" + data[at + 2 :]
    with pytest.raises(DecodingError, match="not valid UTF-8"):
        codec.decode(bad)


def test_non_uuid_event_id_from_another_producer_is_refused(
    codec: Codec, missing: dict[str, Any]
) -> None:
    # Written without the codec (as a foreign producer might), so nothing validated it.
    missing["event_id"] = "Jamie-Example"
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, fastavro.parse_schema(codec.raw_schemas()["safeshare.ConcernEvent"]), missing
    )
    with pytest.raises(DecodingError) as exc:
        codec.decode(b"\xc3\x01" + codec.fingerprint() + body.getvalue())
    assert str(exc.value) == "event_id: not a UUID (8-4-4-4-12 hex digits)"


def _varint(n: int) -> bytes:
    """Avro long: zig-zag, then base-128 little-endian groups."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = z & 0x7F
        z >>= 7
        if z:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _bounded(codec: Codec, data: bytes) -> tuple[float, int]:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(DecodingError):
            codec.decode(data)
        elapsed = time.perf_counter() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return elapsed, peak


def test_lying_string_length_neither_hangs_nor_allocates(
    codec: Codec, missing: dict[str, Any]
) -> None:
    data = codec.encode(missing)
    # The body starts with event_id: a string, i.e. a length then the bytes.
    assert data[HEADER_SIZE] == 2 * 36
    for length in (2**62, 2**31, 10_000_000):
        forged = data[:HEADER_SIZE] + _varint(length) + data[HEADER_SIZE + 1 :]
        elapsed, peak = _bounded(codec, forged)
        assert elapsed < 1.0
        assert peak < 5_000_000


def test_lying_array_count_neither_hangs_nor_allocates(codec: Codec) -> None:
    obj = event_json("return_home_interview")
    obj["payload"] = {"type": "ReturnHomeInterview", "risk_indicators": ["CSE"]}
    data = codec.encode(codec.from_json(obj))
    # ... risk_indicators: branch 1, count 1, symbol 0, end of blocks; signature: null
    assert data.endswith(b"\x02\x02\x00\x00\x00")
    head = data[:-4]
    for count in (2**62, -(2**62)):
        block = _varint(count) + (_varint(1) if count < 0 else b"")
        forged = head + block + b"\x00" * 1000
        elapsed, peak = _bounded(codec, forged)
        assert elapsed < 1.0
        assert peak < 5_000_000


def test_messages_over_the_limit_are_refused_before_parsing() -> None:
    small = Codec.from_dir(SCHEMAS, max_message_bytes=1000)
    with pytest.raises(DecodingError, match="1001 bytes, over the limit of 1000"):
        small.decode(b"\xc3\x01" + bytes(999))


def test_decoding_errors_are_codec_errors() -> None:
    assert issubclass(DecodingError, CodecError)
    assert issubclass(UnknownSchemaError, CodecError)


def test_decoded_records_are_independent(codec: Codec, missing: dict[str, Any]) -> None:
    data = codec.encode(missing)
    first = codec.decode(data)
    first["subject"]["given_name"] = "changed"
    assert codec.decode(data) == missing
    assert copy.deepcopy(missing) == codec.decode(data)
