"""The generated reader decodes what fastavro decodes, and refuses what it refuses.

``Codec.decode`` reads a body written with the current schema through the
generated reader (``broker/codec/_read.py``) and hands fastavro the bytes that
reader declines. A record that differed from fastavro's — ``1`` for ``True``, a
naive datetime, a dict where a ``(name, dict)`` tuple belongs — would change
what the policy and every subscriber see; bytes accepted that fastavro refuses
would let a hostile message through. So every test decodes the same bytes
with the codec and with a codec that reads with fastavro only (the decoder as
it was) and requires the same record — same types, same field order — or the
same error, word for word.
"""

from __future__ import annotations

import io
import json
import math
import shutil
import struct
from datetime import date, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.codec import Codec, DecodingError, UnknownSchemaError, _read
from broker.codec._fingerprint import HEADER_SIZE
from broker.codec._load import _entry
from broker.codec._schema import DATA_CLASSES, build
from broker.codec._write import FromInput, Written
from fuzz.corpus import hostile_corpus
from tests.codec_strategies import CODEC, SETTINGS, records, strategy

ROOT = Path(__file__).resolve().parent.parent
EVENT_FILES = sorted((ROOT / "tests" / "data" / "events").glob("*.json"))
EVENT = "safeshare.ConcernEvent"


def fastavro_only(codec: Codec) -> Codec:
    """A codec on the same schemas that reads every body with fastavro."""
    old = Codec.from_dir(codec.schemas_dir)
    for name in old.names():
        old._readers[name] = None  # as if no reader could be generated
    return old


OLD = fastavro_only(CODEC)


def shape(value: Any) -> Any:
    """``value`` in a form whose equality also means equal types and field order
    (``True == 1`` and ``{'a': 1, 'b': 2} == {'b': 2, 'a': 1}`` in Python), and
    floats by their bits (so a decoded NaN equals itself)."""
    if isinstance(value, dict):
        return ("dict", tuple((k, shape(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(shape(v) for v in value))
    if isinstance(value, tuple):
        return ("tuple", tuple(shape(v) for v in value))
    if isinstance(value, float):
        return ("float", struct.pack("<d", value))
    if isinstance(value, datetime):
        return ("datetime", value, value.tzinfo)
    return (type(value).__name__, value)


def verdict(codec: Codec, data: bytes, schema: str) -> Any:
    try:
        return ("record", shape(codec.decode(data, schema)))
    except (DecodingError, UnknownSchemaError) as exc:
        return (type(exc).__name__, str(exc))


def assert_same(data: bytes, schema: str = EVENT, new: Codec = CODEC, old: Codec = OLD) -> Any:
    got, expected = verdict(new, data, schema), verdict(old, data, schema)
    assert got == expected, f"{schema}: {data.hex()}"
    assert_routes_the_same(data, schema, new, expected)
    return got


#: Grants the routing path's copies are compared under (with every schema's classes).
ROUTING_GRANTS: tuple[frozenset[str], ...] = (
    frozenset(),
    frozenset(DATA_CLASSES),
    frozenset({"free_text", "concern_summary", "pseudonym"}),
    frozenset(DATA_CLASSES - {"location", "identity"}),
)


def assert_routes_the_same(data: bytes, schema: str, codec: Codec, expected: Any) -> None:
    """``decode_for_routing`` gives decode's verdict, and copies that are the
    writer's copies of the record (``written``), whatever the bytes were."""
    try:
        record, copies = codec.decode_for_routing(data, schema)
    except (DecodingError, UnknownSchemaError) as exc:
        assert (type(exc).__name__, str(exc)) == expected, f"routing {schema}: {data.hex()}"
        return
    assert ("record", shape(record)) == expected, f"routing {schema}: {data.hex()}"
    writer = codec.written(record, schema)
    for grant in ROUTING_GRANTS:
        assert copies.redacted(grant) == writer.redacted(grant), f"{sorted(grant)}: {data.hex()}"


def fast_read(codec: Codec, data: bytes, schema: str) -> dict[str, Any]:
    """The generated reader's own result (raises if it declines the bytes)."""
    read = _read.compile_reader(codec._entry(schema).node)
    record, end = read(data, HEADER_SIZE)
    assert end == len(data)
    return record


def example(path: Path) -> bytes:
    return CODEC.encode(CODEC.from_json(json.loads(path.read_text(encoding="utf-8"))))


# -- valid records ----------------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_example_events_decode_to_fastavros_record_through_the_fast_reader(path: Path) -> None:
    data = example(path)
    kind, _ = assert_same(data)
    assert kind == "record"
    # The record came from the generated reader, not from a silent fallback.
    assert shape(fast_read(CODEC, data, EVENT)) == shape(OLD.decode(data))
    assert CODEC._readers[EVENT] is not None


@pytest.mark.parametrize("name", CODEC.names())
def test_any_valid_record_of_any_schema_decodes_as_fastavro_decodes(name: str) -> None:
    @SETTINGS
    @given(records(name))
    def check(record: dict[str, Any]) -> None:
        data = CODEC.encode(record, name)
        assert shape(fast_read(CODEC, data, name)) == shape(OLD.decode(data, name))
        assert CODEC.decode(data, name) == record  # (hypothesis orders keys its own way)
        assert_same(data, name)

    check()


def test_input_that_is_not_bytes_decodes_the_same() -> None:
    data = example(EVENT_FILES[0])
    for view in (bytearray(data), memoryview(data)):
        assert shape(CODEC.decode(view)) == shape(OLD.decode(data))  # type: ignore[arg-type]


# -- hostile bytes ----------------------------------------------------------------------


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_every_cut_and_byte_change_of_an_example_event_gets_fastavros_verdict(
    path: Path,
) -> None:
    data = example(path)
    outcomes: set[str] = set()
    for cut in range(len(data) + 1):
        outcomes.add(assert_same(data[:cut])[0])
    for at in range(HEADER_SIZE, len(data)):
        for byte in {0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF, data[at] ^ 0x01}:
            changed = bytearray(data)
            changed[at] = byte
            outcomes.add(assert_same(bytes(changed))[0])
    assert_same(data + b"\x00")
    # Both kinds of outcome were met: the changes reached accepting and refusing paths.
    assert {"record", "DecodingError"} <= outcomes


def test_the_hostile_corpus_gets_fastavros_verdict() -> None:
    corpus = hostile_corpus(CODEC)
    assert len(corpus) > 20
    for _name, _agency, data in corpus:
        assert_same(data)


@SETTINGS
@given(st.binary(max_size=2000))
def test_garbage_bodies_get_fastavros_verdict(body: bytes) -> None:
    assert_same(b"\xc3\x01" + CODEC.fingerprint() + body)


@SETTINGS
@given(records(EVENT), st.data())
def test_mutated_events_get_fastavros_verdict(record: dict[str, Any], data: st.DataObject) -> None:
    encoded = bytearray(CODEC.encode(record))
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(HEADER_SIZE, len(encoded)))
        op = data.draw(st.sampled_from(["set", "insert", "delete", "cut"]))
        if op == "set" and at < len(encoded):
            encoded[at] = data.draw(st.integers(0, 255))
        elif op == "insert":
            encoded[at:at] = data.draw(st.binary(min_size=1, max_size=12))
        elif op == "delete":
            del encoded[at : at + data.draw(st.integers(1, 12))]
        elif op == "cut":
            del encoded[at:]
    assert_same(bytes(encoded))


# -- every Avro type, and the encodings fastavro accepts that no writer produces ------

NS = "safeshare"


def _field(name: str, type_: Any, label: str = "metadata") -> dict[str, Any]:
    out = {"name": name, "type": type_, "doc": f"{name}.", "dataClass": label}
    if label != "metadata":
        out["default"] = None  # a schema rule for the fields a copy may null
    return out


# Fields whose bytes the routing path cuts out of a copy that may not show them:
# top-level ones, and ones in records inside metadata unions and arrays.
LABELS = {"opt": "free_text", "secret": "identity"}


A = {"type": "record", "name": "A", "namespace": NS, "doc": "A.", "fields": [_field("x", "long")]}
B = {
    "type": "record",
    "name": "B",
    "namespace": NS,
    "doc": "B.",
    "fields": [_field("y", {"type": "array", "items": "safeshare.A"})],
}
C = {
    "type": "record",
    "name": "C",
    "namespace": NS,
    "doc": "C.",
    "fields": [_field("z", ["null", "string"], "location")],
}
D = {
    "type": "record",
    "name": "D",
    "namespace": NS,
    "doc": "D.",
    "fields": [_field("w", ["null", "long"], "identity")],
}
BOOLEANS = {"type": "array", "items": "boolean"}
EVERYTHING_FIELDS = [
    ("b", "boolean"),
    ("i", "int"),
    ("l", "long"),
    ("f", "float"),
    ("d", "double"),
    ("by", "bytes"),
    ("s", "string"),
    ("e", {"type": "enum", "name": "Colour", "namespace": NS, "symbols": ["RED", "GREEN", "BLUE"]}),
    ("fx", {"type": "fixed", "name": "Tag", "namespace": NS, "size": 4}),
    ("a", {"type": "array", "items": "long"}),
    ("m", {"type": "map", "values": "string"}),
    ("ts", {"type": "long", "logicalType": "timestamp-millis"}),
    ("dt", {"type": "int", "logicalType": "date"}),
    ("opt", ["null", "string"]),
    ("rev", ["string", "null"]),
    ("choice", ["null", "safeshare.A", "safeshare.B"]),
    ("nested", {"type": "array", "items": {"type": "map", "values": BOOLEANS}}),
    ("ref", "safeshare.A"),
    ("again", ["null", "safeshare.A"]),
    ("wrapped", ["null", "safeshare.C"]),
    ("many", {"type": "array", "items": "safeshare.C"}),
    ("secret", ["null", "safeshare.D"]),
]
EVERYTHING = {
    "type": "record",
    "name": "Everything",
    "namespace": NS,
    "doc": "Every Avro type the codec can meet.",
    "fields": [_field(n, t, LABELS.get(n, "metadata")) for n, t in EVERYTHING_FIELDS],
}
# A union of several named types that are not records: fastavro's tuple rules
# for those are not copied, so the reader is not generated and fastavro reads.
ODD = {
    "type": "record",
    "name": "Odd",
    "namespace": NS,
    "doc": "A union of an enum and a fixed.",
    "fields": [
        _field(
            "u",
            [
                "null",
                {"type": "enum", "name": "Kind", "namespace": NS, "symbols": ["X", "Y"]},
                {"type": "fixed", "name": "Two", "namespace": NS, "size": 2},
            ],
        )
    ],
}


def zz(n: int) -> bytes:
    """The Avro long ``n`` (zig-zag varint)."""
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


def s(text: bytes) -> bytes:
    return zz(len(text)) + text


PLAIN: dict[str, bytes] = {
    "b": b"\x01",
    "i": zz(7),
    "l": zz(-3),
    "f": struct.pack("<f", 1.5),
    "d": struct.pack("<d", 2.5),
    "by": s(b"\x00\xff"),
    "s": s("héllo".encode()),
    "e": zz(1),
    "fx": b"abcd",
    "a": zz(2) + zz(5) + zz(6) + zz(0),
    "m": zz(1) + s(b"k") + s(b"v") + zz(0),
    "ts": zz(1_700_000_000_123),
    "dt": zz(19_000),
    "opt": zz(1) + s(b"x"),
    "rev": zz(1),
    "choice": zz(2) + zz(1) + zz(4) + zz(0),
    "nested": zz(1) + zz(1) + s(b"k") + zz(2) + b"\x00\x01" + zz(0) + zz(0) + zz(0),
    "ref": zz(9),
    "again": zz(1) + zz(10),
    "wrapped": zz(1) + zz(1) + s(b"here"),
    "many": zz(2) + zz(1) + s(b"a") + zz(0) + zz(0),
    "secret": zz(1) + zz(1) + zz(5),
}


@pytest.fixture(scope="module")
def everything(tmp_path_factory: pytest.TempPathFactory) -> tuple[Codec, Codec]:
    directory = tmp_path_factory.mktemp("schemas")
    for raw in (A, B, C, D, EVERYTHING, ODD):
        (directory / f"{raw['name']}.avsc").write_text(json.dumps(raw), encoding="utf-8")
    codec = Codec.from_dir(directory)
    return codec, fastavro_only(codec)


def body(**raw: bytes) -> bytes:
    parts = {**PLAIN, **raw}
    return b"".join(parts[name] for name, _ in EVERYTHING_FIELDS)


def message(codec: Codec, **raw: bytes) -> bytes:
    return codec.header("safeshare.Everything") + body(**raw)


def test_every_type_decodes_as_fastavro_decodes(everything: tuple[Codec, Codec]) -> None:
    new, old = everything
    data = message(new)
    record = new.decode(data, "safeshare.Everything")
    assert shape(record) == shape(old.decode(data, "safeshare.Everything"))
    assert shape(fast_read(new, data, "safeshare.Everything")) == shape(record)
    assert record["choice"] == ("safeshare.B", {"y": [{"x": 4}]})
    assert record["again"] == {"x": 10} and record["rev"] is None
    assert type(record["by"]) is bytes and type(record["dt"]) is date
    assert record["ts"].tzinfo is not None
    # What a writer writes for that record is these very bytes.
    assert new.encode(record, "safeshare.Everything") == data


def test_generated_records_of_every_type_decode_as_fastavro_decodes(
    everything: tuple[Codec, Codec],
) -> None:
    new, old = everything
    name = "safeshare.Everything"

    @SETTINGS
    @given(strategy(new._entry(name).node))
    def check(record: dict[str, Any]) -> None:
        data = new.encode(record, name)
        assert shape(fast_read(new, data, name)) == shape(old.decode(data, name))
        assert_same(data, name, new, old)

    check()


DECLINED = (_read.Defer, EOFError, IndexError, KeyError, ValueError, OverflowError)
NAN = struct.pack("<d", math.nan)[:-2] + b"\xf8\x7f"
# (case, field, raw bytes, whether the generated reader reads it itself)
CRAFTED: list[tuple[str, str, bytes, bool]] = [
    ("negative union index counts from the end", "opt", zz(-1) + s(b"x"), False),
    ("union index past the branches", "opt", zz(2), False),
    ("union index in a two-byte varint", "opt", b"\x82\x00" + s(b"x"), False),
    ("record union index negative", "choice", zz(-2) + zz(7), False),
    ("boolean byte 2", "b", b"\x02", False),
    ("boolean byte 0xff", "b", b"\xff", False),
    ("enum index -1", "e", zz(-1), False),
    ("enum index past the symbols", "e", zz(3), False),
    ("11-byte varint", "l", b"\x80" * 10 + b"\x01", False),
    ("65-byte varint", "l", b"\x80" * 64 + b"\x02", False),
    ("10-byte varint with bits past 64", "l", b"\xfe" * 9 + b"\x7f", True),
    ("smallest long", "l", b"\xff" * 9 + b"\x01", True),
    ("non-minimal varint", "l", b"\x86\x80\x00", True),
    ("int past 32 bits", "i", zz(2**40), True),
    ("negative block count with a size", "a", zz(-2) + zz(2) + zz(5) + zz(6) + zz(0), True),
    ("negative map block count", "m", zz(-1) + zz(4) + s(b"k") + s(b"v") + zz(0), True),
    ("block count -2**63", "a", zz(-(2**63)) + zz(0) + zz(0), False),
    ("block count that lies", "a", zz(2**62) + zz(1), False),
    ("map count that lies", "m", zz(2**40) + s(b"k"), False),
    ("negative string length", "s", zz(-1), False),
    ("string length past the end", "s", zz(10**6) + b"x", False),
    ("string length 2**63-1", "s", zz(2**63 - 1), False),
    ("invalid UTF-8", "s", s(b"\xc3\x28"), False),
    ("UTF-8 surrogate", "s", s(b"\xed\xa0\x80"), False),
    ("invalid UTF-8 map key", "m", zz(1) + s(b"\xff") + s(b"v") + zz(0), False),
    ("negative bytes length", "by", zz(-3), False),
    # A string branch of a union reads its length past the index byte, inline.
    ("negative string length in a union", "opt", zz(1) + zz(-1), False),
    ("string length in a union past the end", "opt", zz(1) + zz(40) + b"x", False),
    ("two-byte string length in a union past the end", "opt", zz(1) + zz(100) + b"x", False),
    ("invalid UTF-8 in a union", "opt", zz(1) + s(b"\xc3\x28"), False),
    ("NaN double", "d", NAN, True),
    ("signalling NaN float", "f", b"\x01\x00\x80\x7f", True),
    ("timestamp past year 9999", "ts", zz(2**62), False),
    ("negative timestamp", "ts", zz(-1), True),
    ("date before year 1", "dt", zz(-800_000), False),
    ("nested array count that lies", "nested", zz(1) + zz(1) + s(b"k") + zz(2**50), False),
]


@pytest.mark.parametrize(("case", "field", "raw", "fast"), CRAFTED, ids=[c[0] for c in CRAFTED])
def test_crafted_encodings_get_fastavros_verdict(
    everything: tuple[Codec, Codec], case: str, field: str, raw: bytes, fast: bool
) -> None:
    new, old = everything
    name = "safeshare.Everything"
    data = message(new, **{field: raw})
    assert_same(data, name, new, old)
    if fast:
        assert shape(fast_read(new, data, name)) == shape(old.decode(data, name)), case
    else:
        # Declined: fastavro decides (and words any error), as before.
        with pytest.raises(DECLINED):
            fast_read(new, data, name)


def padded(varint: bytes) -> bytes:
    """``varint`` one byte longer than it need be (a 0x00 group on top)."""
    return varint[:-1] + bytes([varint[-1] | 0x80]) + b"\x00"


# (case, field, raw bytes, whether they are the writer's own: copies come from them)
ROUTED: list[tuple[str, str, bytes, bool]] = [
    ("the writer's bytes", "l", PLAIN["l"], True),
    ("smallest long", "l", b"\xff" * 9 + b"\x01", True),
    ("largest long", "l", zz(2**63 - 1), True),
    ("two-byte long", "l", zz(64), True),
    ("non-minimal varint", "l", b"\x86\x80\x00", False),
    ("zero in two bytes", "l", b"\x80\x00", False),
    ("10-byte varint with bits past 64", "l", b"\xfe" * 9 + b"\x7f", False),
    ("10-byte varint ending in 0", "l", b"\xff" * 9 + b"\x00", False),
    ("int past 32 bits", "i", zz(2**40), True),  # what the writer writes for that int
    ("non-minimal timestamp", "ts", padded(zz(1_700_000_000_123)), False),
    ("non-minimal date", "dt", padded(zz(19_000)), False),
    ("non-minimal string length", "s", padded(zz(6)) + "héllo".encode(), False),
    ("non-minimal bytes length", "by", padded(zz(2)) + b"\x00\xff", False),
    ("empty array", "a", zz(0), True),
    ("negative block count with a size", "a", zz(-2) + zz(2) + zz(5) + zz(6) + zz(0), False),
    ("array in two blocks", "a", zz(1) + zz(5) + zz(1) + zz(6) + zz(0), False),
    ("non-minimal block count", "a", padded(zz(2)) + zz(5) + zz(6) + zz(0), False),
    ("non-minimal closing count", "a", zz(2) + zz(5) + zz(6) + padded(zz(0)), False),
    ("non-minimal item", "a", zz(2) + zz(5) + padded(zz(6)) + zz(0), False),
    ("empty map", "m", zz(0), True),
    ("negative map block count", "m", zz(-1) + zz(4) + s(b"k") + s(b"v") + zz(0), False),
    ("map key repeated", "m", zz(2) + s(b"k") + s(b"v") + s(b"k") + s(b"w") + zz(0), False),
    (
        "map in two blocks",
        "m",
        zz(1) + s(b"k") + s(b"v") + zz(1) + s(b"j") + s(b"w") + zz(0),
        False,
    ),
    ("non-minimal map key length", "m", zz(1) + padded(zz(1)) + b"k" + s(b"v") + zz(0), False),
    (
        "nested array in two blocks",
        "nested",
        zz(1) + zz(1) + s(b"k") + zz(1) + b"\x00" + zz(1) + b"\x01" + zz(0) + zz(0) + zz(0),
        False,
    ),
    ("quiet NaN double", "d", NAN, True),
    ("signalling NaN double", "d", b"\x01\x00\x00\x00\x00\x00\xf0\x7f", True),
    ("negative zero double", "d", struct.pack("<d", -0.0), True),
    ("quiet NaN float", "f", b"\x00\x00\xc0\x7f", True),
    # A float is read into a double and packed back: the signalling bit is lost.
    ("signalling NaN float", "f", b"\x01\x00\x80\x7f", False),
    ("boolean byte 2", "b", b"\x02", False),
    ("non-minimal enum index", "e", padded(zz(1)), False),
    ("null in a cut field", "opt", zz(0), True),
    ("union index in a two-byte varint", "opt", padded(zz(1)) + s(b"x"), False),
    ("negative union index", "opt", zz(-1) + s(b"x"), False),
    ("non-minimal length in a cut field", "opt", zz(1) + padded(zz(1)) + b"x", False),
    ("other record branch", "choice", zz(1) + zz(7), True),
    (
        "two blocks in a record branch",
        "choice",
        zz(2) + zz(1) + zz(4) + zz(1) + zz(6) + zz(0),
        False,
    ),
    ("null record in a cut field", "secret", zz(0), True),
    ("non-minimal long in a cut record", "secret", zz(1) + zz(1) + padded(zz(5)), False),
    ("non-minimal union index of a cut record", "secret", padded(zz(1)) + zz(1) + zz(5), False),
    ("null inside a cut record", "secret", zz(1) + zz(0), True),
    ("cut field null in a metadata record", "wrapped", zz(1) + zz(0), True),
    (
        "non-minimal cut field in a metadata record",
        "wrapped",
        zz(1) + zz(1) + padded(zz(1)) + b"x",
        False,
    ),
    ("cuts in every array item", "many", zz(2) + zz(1) + s(b"a") + zz(1) + s(b"b") + zz(0), True),
    (
        "cuts in an array of two blocks",
        "many",
        zz(1) + zz(1) + s(b"a") + zz(1) + zz(0) + zz(0),
        False,
    ),
    ("no cut in an empty array", "many", zz(0), True),
    # Edges of the one-byte varint read inline, and of read_long_canonical's
    # unrolled bytes (up to 6) and its loop (7 to 10).
    *[(f"long {n}", "l", zz(n), True) for n in (63, 64, -64, -65, 2**41 - 1, -(2**41) - 1)],
    ("string of 63 bytes", "s", s(b"x" * 63), True),
    ("string of 64 bytes", "s", s(b"x" * 64), True),
    ("string of 63 bytes in a cut field", "opt", zz(1) + s(b"x" * 63), True),
    ("string of 64 bytes in a cut field", "opt", zz(1) + s(b"x" * 64), True),
    ("string of 9000 bytes in a cut field", "opt", zz(1) + s(b"x" * 9000), True),
    ("non-minimal length 63 in a cut field", "opt", zz(1) + padded(zz(63)) + b"x" * 63, False),
    ("six-byte timestamp", "ts", zz(2**41 - 1), True),
    ("seven-byte timestamp", "ts", zz(2**41), True),
    ("negative six-byte timestamp", "ts", zz(-(2**41)), True),
    *[
        # zz(2 ** (7k - 1)) is k + 1 bytes long; padded, k + 2.
        (f"non-minimal {k + 2}-byte timestamp", "ts", padded(zz(2 ** (7 * k - 1))), False)
        for k in range(1, 7)  # to 2**41 ms (2039); 2**48 is past year 9999
    ],
]


def _read_long_canonical_reference(data: bytes, pos: int) -> tuple[int, int]:
    """read_long_canonical as it was first written: read_long, then the rule."""
    start = pos
    value, pos = _read.read_long(data, pos)
    last = data[pos - 1]
    if (last == 0 and pos - start > 1) or (pos - start == 10 and last > 1):
        raise _read.NotCanonical("varint")
    return value, pos


def _outcome(read: Any, data: bytes, pos: int) -> Any:
    try:
        return read(data, pos)
    except (IndexError, _read.Defer) as exc:
        return type(exc), str(exc)


@SETTINGS
@given(st.binary(max_size=12), st.integers(min_value=0, max_value=2))
def test_read_long_canonical_is_read_long_of_a_minimal_varint(data: bytes, pos: int) -> None:
    """Unrolled to 6 bytes: the same value, end, error and message as the
    plain loop and the minimality rule, at any length and cut short anywhere."""
    assert _outcome(_read.read_long_canonical, data, pos) == _outcome(
        _read_long_canonical_reference, data, pos
    )


@pytest.mark.parametrize(
    "n", [0, -1, 63, 64, -64, -65, 8191, 8192, -8193, 2**41 - 1, 2**41, -(2**63), 2**63 - 1]
)
def test_read_long_canonical_at_the_edges_of_each_length(n: int) -> None:
    """Each minimal varint reads back; one byte longer (a 0x00 group on top),
    cut short, or followed by more bytes, as the reference does."""
    for data in (zz(n), padded(zz(n)), zz(n)[:-1], zz(n) + b"\x01\x80"):
        assert _outcome(_read.read_long_canonical, data, 0) == _outcome(
            _read_long_canonical_reference, data, 0
        ), data
    assert _read.read_long_canonical(zz(n), 0) == (n, len(zz(n)))


@pytest.mark.parametrize(("case", "field", "raw", "canonical"), ROUTED, ids=[c[0] for c in ROUTED])
def test_routing_copies_come_from_the_input_only_when_it_is_the_writers_encoding(
    everything: tuple[Codec, Codec], case: str, field: str, raw: bytes, canonical: bool
) -> None:
    new, old = everything
    name = "safeshare.Everything"
    data = message(new, **{field: raw})
    # decode's verdict, and the writer's copies (assert_routes_the_same).
    assert assert_same(data, name, new, old)[0] == "record", case
    record, copies = new.decode_for_routing(data, name)
    writer = new.written(record, name)
    assert isinstance(writer, Written)
    # The case is what it says: the writer writes these bytes back, or others.
    assert (writer.body == data[HEADER_SIZE:]) == canonical, case
    assert isinstance(copies, FromInput) == canonical, case
    if isinstance(copies, FromInput):
        assert (copies.body, copies.cuts) == (writer.body, writer.cuts)


def test_routing_cuts_are_the_writers_for_every_kind_of_place(
    everything: tuple[Codec, Codec],
) -> None:
    new, _ = everything
    name = "safeshare.Everything"
    data = message(new)
    record, copies = new.decode_for_routing(data, name)
    assert isinstance(copies, FromInput)
    writer = new.written(record, name)
    assert isinstance(writer, Written)
    assert copies.cuts == writer.cuts
    # opt; wrapped.z; many[0].z (many[1].z is null: no cut); secret
    assert [label for *_, label in copies.cuts] == ["free_text", "location", "location", "identity"]
    body = data[HEADER_SIZE:]
    assert [body[a:b] for a, b, _ in copies.cuts] == [
        PLAIN["opt"],
        zz(1) + s(b"here"),
        zz(1) + s(b"a"),
        PLAIN["secret"],
    ]
    assert copies.redacted(frozenset({"location"})) == body.replace(PLAIN["opt"], b"\x00").replace(
        PLAIN["secret"], b"\x00"
    )


def test_every_cut_and_byte_change_of_every_type_gets_fastavros_verdict(
    everything: tuple[Codec, Codec],
) -> None:
    new, old = everything
    name = "safeshare.Everything"
    data = message(new)
    for cut in range(len(data) + 1):
        assert_same(data[:cut], name, new, old)
    for at in range(HEADER_SIZE, len(data)):
        for byte in range(256):
            changed = bytearray(data)
            changed[at] = byte
            assert_same(bytes(changed), name, new, old)


def test_a_schema_the_reader_does_not_generate_is_read_by_fastavro(
    everything: tuple[Codec, Codec],
) -> None:
    new, old = everything
    with pytest.raises(_read.Unsupported, match="not all records"):
        _read.compile_reader(build(new.raw_schemas()["safeshare.Odd"]))  # type: ignore[arg-type]
    for record in ({"u": None}, {"u": "Y"}, {"u": b"\x00\x01"}):
        data = new.encode(record, "safeshare.Odd")
        assert assert_same(data, "safeshare.Odd", new, old)[0] == "record"
    assert new._readers["safeshare.Odd"] is None


def test_arrays_of_zero_width_items_are_left_to_fastavro() -> None:
    # The schema rules refuse them; were a codec built without the rules, a
    # hostile count must not spin the generated reader without consuming input.
    raw = {
        "type": "record",
        "name": "Nothing",
        "namespace": NS,
        "fields": [_field("n", {"type": "array", "items": "null"})],
    }
    with pytest.raises(_read.Unsupported, match="zero bytes"):
        _read.compile_reader(build(raw))  # type: ignore[arg-type]


def test_a_body_written_with_an_older_schema_is_resolved_by_fastavro(tmp_path: Path) -> None:
    directory = tmp_path / "schemas"
    shutil.copytree(ROOT / "schemas", directory)
    older = CODEC.raw_schemas()[EVENT]
    older["fields"] = [f for f in older["fields"] if f["name"] != "signature"]
    history = directory / "history" / "ConcernEvent"
    (history / "1.avsc").rename(history / "2.avsc")
    (history / "1.avsc").write_text(json.dumps(older), encoding="utf-8")
    codec = Codec.from_dir(directory)
    record = CODEC.from_json(json.loads(EVENT_FILES[0].read_text(encoding="utf-8")))
    del record["signature"]
    writer = _entry(older, 1, "older")
    out = io.BytesIO()
    fastavro.schemaless_writer(out, writer.parsed, record)
    data = writer.header + out.getvalue()
    assert data[2:HEADER_SIZE] != codec.fingerprint()

    decoded = codec.decode(data)
    assert decoded == {**record, "signature": None}  # the reader's default
    assert shape(decoded) == shape(fastavro_only(codec).decode(data))
