"""Property-based tests: any record the schema allows survives every conversion,
and no byte string makes the decoder do anything but decode or raise DecodingError.

Records are drawn from the codec's own schema model, so a field added to a
schema is covered without touching this file.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.codec import CodecError, DecodingError, UnknownSchemaError
from broker.codec._schema import DATA_CLASSES
from tests.codec_strategies import CODEC, SETTINGS, records


@pytest.mark.parametrize(
    "name", ["safeshare.ConcernEvent", "safeshare.FeedRecord", "safeshare.QuarantineRecord"]
)
def test_every_valid_record_round_trips(name: str) -> None:
    @SETTINGS
    @given(records(name))
    def check(record: dict[str, Any]) -> None:
        CODEC.validate(record, name)
        data = CODEC.encode(record, name)
        assert CODEC.decode(data, name) == record
        printed = json.loads(json.dumps(CODEC.to_json(record, name)))
        assert CODEC.from_json(printed, name) == record
        copy, redacted = CODEC.redact(record, DATA_CLASSES, name)
        assert copy == record and redacted == []
        minimised, _ = CODEC.redact(record, set(), name)
        assert CODEC.decode(CODEC.encode(minimised, name), name) == minimised

    check()


@SETTINGS
@given(st.binary(max_size=2000))
def test_garbage_bodies_decode_or_raise_decoding_error(body: bytes) -> None:
    data = b"\xc3\x01" + CODEC.fingerprint() + body
    try:
        record = CODEC.decode(data)
    except DecodingError:
        return
    CODEC.validate(record)  # anything accepted is a valid event


@SETTINGS
@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_escape_the_codec_errors(data: bytes) -> None:
    with contextlib.suppress(DecodingError, UnknownSchemaError):
        CODEC.decode(data)


@SETTINGS
@given(records("safeshare.ConcernEvent"), st.data())
def test_any_corruption_is_caught_or_harmless(record: dict[str, Any], data: st.DataObject) -> None:
    encoded = bytearray(CODEC.encode(record))
    at = data.draw(st.integers(10, len(encoded) - 1))
    encoded[at] = data.draw(st.integers(0, 255))
    with contextlib.suppress(CodecError):
        CODEC.validate(CODEC.decode(bytes(encoded)))
