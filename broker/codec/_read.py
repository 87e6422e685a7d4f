"""A fast Avro binary reader for bodies written with the reader's own schema.

Why this exists: the router decodes every inbound event, and fastavro's reader
spends most of its time dispatching on the schema per value (and building union
tuples by inspecting the schema each time; docs/PERFORMANCE.md). When the
writer schema *is* the reader schema (same fingerprint: the common case) no
schema resolution is needed, and the schema is known in advance, so the
reader can be generated Python source, compiled once per schema: straight-line
code for the schema's records, loops for arrays and maps, no per-value type
dispatch — the mirror of :mod:`broker.codec._write`.

Its result is exactly fastavro's (``schemaless_reader(...,
return_record_name=True, return_record_name_override=True)``): the same dict
shapes and field order, ``(full name, dict)`` only for a union of several
records, enums as ``str``, ``timestamp-millis`` as an aware UTC datetime built
with fastavro's own arithmetic, ``date`` as :class:`datetime.date`, ``bytes``
as :class:`bytes`, doubles and floats through :mod:`struct`.
``tests/test_codec_read.py`` holds the two readers equal on every example
event, generated records and many corrupted byte strings.

It decodes only the encoding a writer produces. Anything else — a byte string
that is truncated, garbage, not UTF-8, a union or enum index that is not the
one-byte form of a valid index, a varint over 10 bytes — raises either
:class:`Defer` or one of the errors the codec maps to
:class:`~broker.codec.exceptions.DecodingError`, and the codec then hands the
bytes to fastavro, whose verdict and message stand. fastavro accepts some odd
encodings (a negative union index counts from the end, a boolean byte 2 is
true, an 11-byte varint wraps); deferring to it keeps what the codec returns
and refuses unchanged without copying those quirks here.

Hostile input: every read is bounded by the buffer. Lengths are checked
against what is left before slicing, and counts only drive loops whose every
iteration consumes at least one byte (no item type can be zero bytes wide, a
schema rule, :func:`broker.codec._schema_lint.lint`), so a lying count runs into
the end of the buffer after at most ``len(data)`` items.

The routing variant (:func:`compile_routing_reader`) reads the same way and
returns the same record, and also notes the *cuts* the writer would note
(:mod:`broker.codec._write`): where each top-most non-metadata field's bytes
start and end. It is for the router, which sends each subscriber a redacted
copy of the event: if the input bytes are exactly what the writer would write
for the decoded record, the copies can be spliced from them and the event need
not be encoded again. So it also
raises :class:`NotCanonical` (and the codec falls back to the writer) on any
encoding another byte string shares a record with:

- a varint that is not minimal (``86 80 00`` for 6), or a 10-byte varint
  with bits past 64 (the value is kept to 64 bits, so two strings read alike);
- an array or map in several blocks, in a block of negative count (with its
  byte size), or not closed by the single byte 0 — the writer writes one block
  of positive count, then 0;
- a map whose keys repeat (the dict keeps the last value; fewer entries than
  the count);
- a float or double whose bytes :mod:`struct` does not pack back from the
  value read (a signalling NaN float is quieted on its way through a double).

The rest a reader already holds to one encoding: booleans 0/1, union and enum
indexes as one byte, strict UTF-8 (which ``str.encode`` gives back byte for
byte), timestamps and dates in ranges a datetime holds (their arithmetic is
exact), and the codec refuses trailing bytes.
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Callable
from typing import Any, Final

from broker._codegen import Source
from broker.codec._schema import (
    METADATA,
    Array,
    Enum,
    Fixed,
    Map,
    Node,
    Primitive,
    Record,
    Union,
    _zero_width,
)

#: ``(buffer, start) -> (record, end)``: the record whose body starts at ``start``.
ReadFn = Callable[[bytes, int], tuple[dict[str, Any], int]]
#: ``(start, end, data class)`` of one top-most non-metadata field's bytes,
#: counted from the body's start (as :data:`broker.codec._write.Cut`).
Cut = tuple[int, int, str]
#: :data:`ReadFn` that also returns the cuts (:func:`compile_routing_reader`).
RoutingReadFn = Callable[[bytes, int], tuple[dict[str, Any], int, list[Cut]]]

_MASK64: Final = (1 << 64) - 1
#: Zig-zag decoding of the one-byte varints (0..127): 0 -> 0, 1 -> -1, 2 -> 1 ...
_ZIGZAG: Final = tuple((b >> 1) ^ -(b & 1) for b in range(128))
#: A length in a one-byte varint (0..127) plus 1 (the varint) or 2 (a union index
#: too): where the bytes end, from the varint's or the index's position. A negative
#: length (an odd byte) is 2**62, past the end of any buffer.
_LENGTH1: Final = tuple(1 + (b >> 1) if b % 2 == 0 else 1 << 62 for b in range(128))
_LENGTH2: Final = tuple(2 + (b >> 1) if b % 2 == 0 else 1 << 62 for b in range(128))
# fastavro's logical readers (fastavro/_logical_readers): the same constants and
# arithmetic, so a decoded datetime is the very value fastavro builds.
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_DAYS_SHIFT: Final = _dt.date(1970, 1, 1).toordinal()


class Unsupported(Exception):
    """The schema has a shape this reader does not generate; the codec uses fastavro."""


class Defer(Exception):
    """The bytes are not a writer's plain encoding; fastavro decides what they are."""


class NotCanonical(Defer):
    """The bytes decode, but are not what the writer writes for that record."""


def read_long(data: bytes, pos: int) -> tuple[int, int]:
    """The Avro long whose varint starts at ``pos``, and the position after it.

    As fastavro reads it: up to 10 bytes, the value kept to 64 bits and taken
    as signed (zig-zag). A longer varint raises :class:`Defer` (fastavro's
    reading of one is an artefact of C shifts, not worth copying).
    """
    n = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Defer("varint longer than 10 bytes")
    n &= _MASK64
    return (n >> 1) ^ -(n & 1), pos


def read_long_canonical(data: bytes, pos: int) -> tuple[int, int]:
    """:func:`read_long` of a minimal varint only; :class:`NotCanonical` otherwise.

    A varint of several bytes is minimal when its last byte (the highest
    seven bits) is not 0; one of 10 bytes holds bits 63 and up in its last
    byte, so only 0x01 there keeps the value within 64 bits (bits past them
    are dropped by the read, and another string reads alike).

    Unrolled up to 6 bytes (every timestamp-millis from 1970 to 2039, and
    any string length below 2**34), longer ones through the loop of
    :func:`_read_long_canonical`: the routing reader calls this for each
    varint of two bytes or more, most of them timestamps, and unrolled it is
    cheaper (docs/PERFORMANCE.md). The same bytes are read in the same
    order, so the same errors are raised: IndexError at the end of the
    buffer, then NotCanonical (``tests/test_codec_read.py`` holds it to the
    loop and the rule above on any bytes).
    """
    b = data[pos]
    if b < 0x80:
        return (b >> 1) ^ -(b & 1), pos + 1
    n = b & 0x7F
    b = data[pos + 1]
    if b < 0x80:
        if b:
            n |= b << 7
            return (n >> 1) ^ -(n & 1), pos + 2
        raise NotCanonical("varint")
    n |= (b & 0x7F) << 7
    b = data[pos + 2]
    if b < 0x80:
        if b:
            n |= b << 14
            return (n >> 1) ^ -(n & 1), pos + 3
        raise NotCanonical("varint")
    n |= (b & 0x7F) << 14
    b = data[pos + 3]
    if b < 0x80:
        if b:
            n |= b << 21
            return (n >> 1) ^ -(n & 1), pos + 4
        raise NotCanonical("varint")
    n |= (b & 0x7F) << 21
    b = data[pos + 4]
    if b < 0x80:
        if b:
            n |= b << 28
            return (n >> 1) ^ -(n & 1), pos + 5
        raise NotCanonical("varint")
    n |= (b & 0x7F) << 28
    b = data[pos + 5]
    if b < 0x80:
        if b:
            n |= b << 35
            return (n >> 1) ^ -(n & 1), pos + 6
        raise NotCanonical("varint")
    return _read_long_canonical(data, pos)


def _read_long_canonical(data: bytes, pos: int) -> tuple[int, int]:
    """:func:`read_long_canonical` as a loop, for a varint of any length."""
    start = pos
    n = 0
    shift = 0
    while True:
        b = data[pos]
        pos += 1
        n |= (b & 0x7F) << shift
        if b < 0x80:
            break
        shift += 7
        if shift > 63:
            raise Defer("varint longer than 10 bytes")
    if (b == 0 and pos - start > 1) or (shift == 63 and b > 1):
        raise NotCanonical("varint")
    # Minimal: at most 64 bits, so no mask is needed.
    return (n >> 1) ^ -(n & 1), pos


class _Gen(Source):
    """Emits the source of one reader function.

    Conventions of the generated code: ``d`` is the buffer (bytes), ``p`` the
    position, ``end`` its length; each value is read into a fresh local. With
    ``canonical`` (the routing reader) also ``p0``, where the body starts, and
    ``cuts``, and any encoding the writer would not write raises
    :class:`NotCanonical` (module docstring).

    Values get fresh locals (``v1`` ...), but a length and its end (``n``,
    ``e``), a union index (``u``) and a cut's start (``q``) are scratch
    names shared by the whole function: ``n``, ``e`` and ``u`` are used up
    before any other value is read, and ``q`` is set only for a top-most
    field (cuts do not nest), so nothing read inside it touches it. Every
    call clears the frame's locals, so fewer locals run faster
    (docs/PERFORMANCE.md).
    """

    def __init__(self, canonical: bool = False) -> None:
        self.canonical = canonical
        super().__init__(
            {
                "ZZ": _ZIGZAG,
                "LEN1": _LENGTH1,
                "LEN2": _LENGTH2,
                "LONG": read_long_canonical if canonical else read_long,
                "EPOCH": _EPOCH,
                "TD": _dt.timedelta,
                "FROM_ORDINAL": _dt.date.fromordinal,
                "DAYS_SHIFT": _DAYS_SHIFT,
                "F32": struct.Struct("<f").unpack_from,
                "F64": struct.Struct("<d").unpack_from,
                "P32": struct.Struct("<f").pack,
                "P64": struct.Struct("<d").pack,
                "Defer": Defer,
                "NotCanonical": NotCanonical,
            }
        )
        self._stack: list[Record] = []

    # -- values ------------------------------------------------------------------

    def long(self, t: str, ind: int) -> None:
        """``t`` = the long at ``p``; one-byte varints (most lengths, counts and
        small numbers) from a table, longer ones through :func:`read_long`."""
        self.emit(ind, f"{t} = d[p]")
        self.emit(ind, f"if {t} < 128:")
        self.emit(ind + 1, f"{t} = ZZ[{t}]")
        self.emit(ind + 1, "p += 1")
        self.emit(ind, "else:")
        self.emit(ind + 1, f"{t}, p = LONG(d, p)")

    def raw(
        self, t: str, ind: int, text: bool, off: int = 0, cut: str | None = None
    ) -> None:
        """``t`` = the length-prefixed bytes at ``p + off``, decoded as UTF-8 if
        ``text`` (strictly: fastavro's ``bytes.decode()``); with ``cut``, their
        cut (from ``p``, a union index when ``off`` is 1) noted with that label.

        A length below 64 (one byte, even: zig-zag's non-negative numbers) is
        read inline, its end found in one table (``LEN1``, or ``LEN2`` past a
        union's index byte: ``off`` 1) without moving ``p`` twice.
        """
        n, e = "n", "e"  # scratch locals (the class docstring)
        self.emit(ind, f"{n} = d[p + {off}]" if off else f"{n} = d[p]")
        self.emit(ind, f"if {n} < 128:")
        # fastavro: EOFError when fewer bytes than the length are left, or the
        # length is negative: LEN<k> makes a negative one-byte length (an odd
        # byte) so long that it is past the end too.
        self.emit(ind + 1, f"{e} = p + LEN{off + 1}[{n}]")
        self.emit(ind + 1, f"if {e} > end: raise EOFError")
        self.emit(ind + 1, f"{t} = d[p + {off + 1}:{e}]{'.decode()' if text else ''}")
        if cut is not None:
            self.emit(ind + 1, f"cuts.append((p - p0, {e} - p0, {cut!r}))")
        self.emit(ind, "else:")
        start = "q"
        if cut is not None:
            self.emit(ind + 1, f"{start} = p")
        self.emit(ind + 1, f"{n}, p = LONG(d, p + {off})" if off else f"{n}, p = LONG(d, p)")
        self.emit(ind + 1, f"{e} = p + {n}")
        self.emit(ind + 1, f"if {n} < 0 or {e} > end: raise EOFError")
        self.emit(ind + 1, f"{t} = d[p:{e}]{'.decode()' if text else ''}")  # strict UTF-8
        if cut is not None:
            self.emit(ind + 1, f"cuts.append(({start} - p0, {e} - p0, {cut!r}))")
        self.emit(ind, f"p = {e}")

    # ``cuts``: whether a non-metadata field met below starts a cut (true until
    # the first one on the path; the writer's rule, ``_write._Gen.value``).

    def value(self, node: Node, t: str, ind: int, cuts: bool = False) -> None:
        if isinstance(node, Primitive):
            self.primitive(node, t, ind)
        elif isinstance(node, Enum):
            # Only the one-byte index of a symbol is looked up; anything else
            # (an index out of range, negative, or in a longer varint) is a
            # KeyError and fastavro decides.
            if len(node.symbols) > 64:
                raise Unsupported(f"{node.fullname}: an index needs more than one byte")
            table = self.const({2 * i: s for i, s in enumerate(node.symbols)}, "E")
            self.emit(ind, f"{t} = {table}[d[p]]")
            self.emit(ind, "p += 1")
        elif isinstance(node, Fixed):
            self.emit(ind, f"if p + {node.size} > end: raise EOFError")
            self.emit(ind, f"{t} = d[p:p + {node.size}]")
            self.emit(ind, f"p += {node.size}")
        elif isinstance(node, Array):
            if _zero_width(node.items, set()):
                # A schema rule refuses these (a hostile count would loop without
                # consuming input); a codec built without the rules gets fastavro.
                raise Unsupported("array items can encode to zero bytes")
            self.blocks(t, ind, node.items, None, cuts)
        elif isinstance(node, Map):
            self.blocks(t, ind, node.values, self.var("k"), cuts)
        elif isinstance(node, Union):
            self.union(node, t, ind, cuts)
        elif isinstance(node, Record):
            self.record(node, t, ind, cuts)
        else:  # pragma: no cover - the model has no other node
            raise TypeError(node)

    def primitive(self, node: Primitive, t: str, ind: int) -> None:
        kind, logical = node.kind, node.logical
        if kind == "null":
            self.emit(ind, f"{t} = None")
        elif kind == "boolean":
            # fastavro: any byte but 0 is true; only 0 and 1 are a writer's, the
            # rest defer.
            self.emit(ind, f"{t} = d[p]")
            self.emit(ind, f"if {t} > 1: raise Defer('boolean')")
            self.emit(ind, f"{t} = {t} == 1")
            self.emit(ind, "p += 1")
        elif kind in ("int", "long"):
            # fastavro reads an int as a long (64 bits), and so does this.
            self.long(t, ind)
            if logical == "timestamp-millis" and kind == "long":
                # fastavro: epoch + timedelta(microseconds=ms * 1000) (positional
                # here: the same constructor and value, and cheaper than a keyword).
                self.emit(ind, f"{t} = EPOCH + TD(0, 0, {t} * 1000)")
            elif logical == "date" and kind == "int":
                self.emit(ind, f"{t} = FROM_ORDINAL({t} + DAYS_SHIFT)")
            elif logical is not None:
                raise Unsupported(f"logical type {logical} on {kind}")
        elif kind == "float":
            self.emit(ind, f"{t} = F32(d, p)[0]")
            if self.canonical:
                # The writer packs the value read: the bytes must come back.
                self.emit(ind, f"if P32({t}) != d[p:p + 4]: raise NotCanonical('float')")
            self.emit(ind, "p += 4")
        elif kind == "double":
            self.emit(ind, f"{t} = F64(d, p)[0]")
            if self.canonical:
                self.emit(ind, f"if P64({t}) != d[p:p + 8]: raise NotCanonical('double')")
            self.emit(ind, "p += 8")
        elif kind in ("string", "bytes"):
            if logical is not None:
                raise Unsupported(f"logical type {logical} on {kind}")
            self.raw(t, ind, kind == "string")
        else:  # pragma: no cover - the model has no other primitive
            raise TypeError(kind)

    def blocks(self, t: str, ind: int, inner: Node, key: str | None, cuts: bool) -> None:
        """An array (``key`` None) or a map: blocks of ``count`` items up to a
        count of 0. A negative count is followed by the block's size in bytes,
        which fastavro reads and ignores (Avro spec, "Complex Types")."""
        count, item = self.var("c"), self.var("i")
        self.emit(ind, f"{t} = {{}}" if key else f"{t} = []")
        self.long(count, ind)
        if self.canonical:
            self.one_block(t, count, item, ind, inner, key, cuts)
            return
        self.emit(ind, f"while {count}:")
        self.emit(ind + 1, f"if {count} < 0:")
        # fastavro reads 0 items for -2**63 (its negation overflows 64 bits); here
        # 2**63 items run into the end of the buffer, and fastavro decides.
        self.emit(ind + 2, f"{count} = -{count}")
        self.long(self.var("s"), ind + 2)
        self.emit(ind + 1, f"for _ in range({count}):")
        if key:
            self.raw(key, ind + 2, True)
        self.value(inner, item, ind + 2)
        self.emit(ind + 2, f"{t}[{key}] = {item}" if key else f"{t}.append({item})")
        self.long(count, ind + 1)

    def one_block(
        self, t: str, count: str, item: str, ind: int, inner: Node, key: str | None, cuts: bool
    ) -> None:
        """The writer's form of an array or map (``count`` read): nothing more
        for 0, else one block of ``count`` > 0 items with distinct keys, then 0."""
        self.emit(ind, f"if {count}:")
        self.emit(ind + 1, f"if {count} < 0: raise NotCanonical('negative block count')")
        self.emit(ind + 1, f"for _ in range({count}):")
        if key:
            self.raw(key, ind + 2, True)
        self.value(inner, item, ind + 2, cuts)
        self.emit(ind + 2, f"{t}[{key}] = {item}" if key else f"{t}.append({item})")
        if key:
            self.emit(ind + 1, f"if len({t}) != {count}: raise NotCanonical('repeated map key')")
        # d[p] past the end is an IndexError, as reading a count there would be.
        self.emit(ind + 1, "if d[p]: raise NotCanonical('a second block')")
        self.emit(ind + 1, "p += 1")

    def union(
        self, node: Union, t: str, ind: int, cuts: bool = False, cut: str | None = None
    ) -> None:
        """``t`` = the union value at ``p``; with ``cut``, a non-null value's cut
        (from the index byte to its end) noted with that label in its branch:
        null has none, and as a union holds null once, no other branch reads
        None, so the value need not be tested."""
        branches = node.branches
        if len(branches) > 64:
            raise Unsupported("a union whose index needs more than one byte")
        non_null = node.non_null
        records = [b for b in non_null if isinstance(b, Record)]
        if len(non_null) > 1 and len(records) != len(non_null):
            # fastavro's tuples for other named types in a union follow rules
            # (by name reference or inline) not worth copying; no schema has one.
            raise Unsupported("a union of several types that are not all records")
        tagged = len(non_null) > 1
        # Branch i is the one-byte varint 2*i; any other index byte (negative,
        # out of range, a longer varint) defers. null first: the cheapest test
        # for the many empty fields.
        index = "u"  # scratch: tested before any branch reads (the class docstring)
        self.emit(ind, f"{index} = d[p]")
        order = sorted(range(len(branches)), key=lambda i: not _is_null(branches[i]))
        for n, i in enumerate(order):
            branch = branches[i]
            self.emit(ind, f"{'elif' if n else 'if'} {index} == {2 * i}:")
            if _is_null(branch):
                self.emit(ind + 1, f"{t} = None")
                self.emit(ind + 1, "p += 1")
            elif (
                isinstance(branch, Primitive)
                and branch.kind in ("string", "bytes")
                and branch.logical is None
            ):
                # The commonest field: its length read just past the index.
                self.raw(t, ind + 1, branch.kind == "string", 1, cut)
            else:
                start = "q"
                if cut is not None:
                    self.emit(ind + 1, f"{start} = p")
                self.emit(ind + 1, "p += 1")
                if tagged and isinstance(branch, Record):
                    inner = self.var("w")
                    self.record(branch, inner, ind + 1, cuts)
                    self.emit(ind + 1, f"{t} = ({branch.fullname!r}, {inner})")
                else:
                    self.value(branch, t, ind + 1, cuts)
                if cut is not None:
                    self.emit(ind + 1, f"cuts.append(({start} - p0, p - p0, {cut!r}))")
        self.emit(ind, "else:")
        self.emit(ind + 1, "raise Defer('union index')")

    def record(self, node: Record, t: str, ind: int, cuts: bool = False) -> None:
        if any(r is node for r in self._stack):
            raise Unsupported(f"{node.fullname} is recursive")
        self._stack.append(node)
        names = []
        for f in node.fields:
            v = self.var()
            if cuts and f.data_class not in (None, METADATA):
                self.cut(node, f.name, f.type, f.data_class, v, ind)
            else:
                self.value(f.type, v, ind, cuts)
            names.append(f"{f.name!r}: {v}")
        self._stack.pop()
        # A dict display: fields in schema order, as fastavro inserts them.
        self.emit(ind, f"{t} = {{{', '.join(names)}}}")

    def cut(self, owner: Record, name: str, node: Node, label: str, v: str, ind: int) -> None:
        """A top-most non-metadata field read into ``v``, and its cut noted as
        the writer notes it: none for null (the single byte 0x00, branch 0),
        else from its union index to its end."""
        if not (isinstance(node, Union) and node.null_first):
            # The writer refuses to compile such a field too (schema rules).
            raise Unsupported(f"{owner.fullname}.{name} is not nullable")
        self.union(node, v, ind, cut=label)


def _is_null(node: Node) -> bool:
    return isinstance(node, Primitive) and node.kind == "null"


def compile_reader(root: Record) -> ReadFn:
    """A function ``(buffer, start) -> (record, end)`` for bodies written with
    ``root`` itself (see the module docstring).

    Raises :class:`Unsupported` for a schema it does not generate code for.
    """
    gen = _Gen()
    gen.emit(0, "def read(d, p):")
    gen.emit(1, "end = len(d)")
    gen.record(root, "r", 1)
    gen.emit(1, "return r, p")
    try:
        fn: ReadFn = gen.function("read", f"<avro reader {root.fullname}>")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        # e.g. more than 20 nested loops (arrays of arrays ...): Python's limit.
        raise Unsupported(f"{root.fullname}: reader does not compile ({exc})") from None
    return fn


def compile_routing_reader(root: Record) -> RoutingReadFn:
    """A function ``(buffer, start) -> (record, end, cuts)`` for bodies written
    with ``root`` itself: :func:`compile_reader`'s record, and the writer's cuts
    of it, for the canonical encoding only (the module docstring); anything
    else raises :class:`NotCanonical`, or what the plain reader raises.

    Raises :class:`Unsupported` for a schema it does not generate code for.
    """
    gen = _Gen(canonical=True)
    gen.emit(0, "def read(d, p):")
    gen.emit(1, "end = len(d)")
    gen.emit(1, "p0 = p")
    gen.emit(1, "cuts = []")
    gen.record(root, "r", 1, True)
    gen.emit(1, "return r, p, cuts")
    try:
        fn: RoutingReadFn = gen.function("read", f"<avro routing reader {root.fullname}>")
    except (SyntaxError, RecursionError, MemoryError) as exc:
        raise Unsupported(f"{root.fullname}: reader does not compile ({exc})") from None
    return fn
