"""A fast Avro binary reader for bodies written with the reader's own schema.

Why this exists: the router decodes every inbound event, and fastavro's reader
spent ~50-90 µs on a 1 KB event, most of it dispatching on the schema per value
(and building union tuples by inspecting the schema each time). When the
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
schema rule, :func:`broker.codec._schema.lint`), so a lying count runs into
the end of the buffer after at most ``len(data)`` items.
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Callable
from typing import Any, Final

from broker.codec._codegen import Source
from broker.codec._schema import (
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

_MASK64: Final = (1 << 64) - 1
#: Zig-zag decoding of the one-byte varints (0..127): 0 -> 0, 1 -> -1, 2 -> 1 ...
_ZIGZAG: Final = tuple((b >> 1) ^ -(b & 1) for b in range(128))
# fastavro's logical readers (fastavro/_logical_readers): the same constants and
# arithmetic, so a decoded datetime is the very value fastavro builds.
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_DAYS_SHIFT: Final = _dt.date(1970, 1, 1).toordinal()


class Unsupported(Exception):
    """The schema has a shape this reader does not generate; the codec uses fastavro."""


class Defer(Exception):
    """The bytes are not a writer's plain encoding; fastavro decides what they are."""


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


class _Gen(Source):
    """Emits the source of one reader function.

    Conventions of the generated code: ``d`` is the buffer (bytes), ``p`` the
    position, ``end`` its length; each value is read into a fresh local.
    """

    def __init__(self) -> None:
        super().__init__(
            {
                "ZZ": _ZIGZAG,
                "LONG": read_long,
                "EPOCH": _EPOCH,
                "TD": _dt.timedelta,
                "FROM_ORDINAL": _dt.date.fromordinal,
                "DAYS_SHIFT": _DAYS_SHIFT,
                "F32": struct.Struct("<f").unpack_from,
                "F64": struct.Struct("<d").unpack_from,
                "Defer": Defer,
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

    def raw(self, t: str, ind: int, text: bool) -> None:
        """``t`` = the length-prefixed bytes at ``p``, decoded as UTF-8 if ``text``
        (strictly: fastavro's ``bytes.decode()``)."""
        n, e = self.var("n"), self.var("e")
        self.long(n, ind)
        self.emit(ind, f"{e} = p + {n}")
        # fastavro: EOFError when fewer bytes than the length are left, or the
        # length is negative.
        self.emit(ind, f"if {n} < 0 or {e} > end: raise EOFError")
        self.emit(ind, f"{t} = d[p:{e}]{'.decode()' if text else ''}")  # strict UTF-8
        self.emit(ind, f"p = {e}")

    def value(self, node: Node, t: str, ind: int) -> None:
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
            self.blocks(t, ind, node.items, None)
        elif isinstance(node, Map):
            self.blocks(t, ind, node.values, self.var("k"))
        elif isinstance(node, Union):
            self.union(node, t, ind)
        elif isinstance(node, Record):
            self.record(node, t, ind)
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
                # here: the same constructor and value, a keyword costs ~0.3 µs).
                self.emit(ind, f"{t} = EPOCH + TD(0, 0, {t} * 1000)")
            elif logical == "date" and kind == "int":
                self.emit(ind, f"{t} = FROM_ORDINAL({t} + DAYS_SHIFT)")
            elif logical is not None:
                raise Unsupported(f"logical type {logical} on {kind}")
        elif kind == "float":
            self.emit(ind, f"{t} = F32(d, p)[0]")
            self.emit(ind, "p += 4")
        elif kind == "double":
            self.emit(ind, f"{t} = F64(d, p)[0]")
            self.emit(ind, "p += 8")
        elif kind in ("string", "bytes"):
            if logical is not None:
                raise Unsupported(f"logical type {logical} on {kind}")
            self.raw(t, ind, kind == "string")
        else:  # pragma: no cover - the model has no other primitive
            raise TypeError(kind)

    def blocks(self, t: str, ind: int, inner: Node, key: str | None) -> None:
        """An array (``key`` None) or a map: blocks of ``count`` items up to a
        count of 0. A negative count is followed by the block's size in bytes,
        which fastavro reads and ignores (Avro spec, "Complex Types")."""
        count, item = self.var("c"), self.var("i")
        self.emit(ind, f"{t} = {{}}" if key else f"{t} = []")
        self.long(count, ind)
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

    def union(self, node: Union, t: str, ind: int) -> None:
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
        index = self.var("u")
        self.emit(ind, f"{index} = d[p]")
        self.emit(ind, "p += 1")
        order = sorted(range(len(branches)), key=lambda i: not _is_null(branches[i]))
        for n, i in enumerate(order):
            branch = branches[i]
            self.emit(ind, f"{'elif' if n else 'if'} {index} == {2 * i}:")
            if tagged and isinstance(branch, Record):
                inner = self.var("w")
                self.record(branch, inner, ind + 1)
                self.emit(ind + 1, f"{t} = ({branch.fullname!r}, {inner})")
            else:
                self.value(branch, t, ind + 1)
        self.emit(ind, "else:")
        self.emit(ind + 1, "raise Defer('union index')")

    def record(self, node: Record, t: str, ind: int) -> None:
        if any(r is node for r in self._stack):
            raise Unsupported(f"{node.fullname} is recursive")
        self._stack.append(node)
        names = []
        for f in node.fields:
            v = self.var()
            self.value(f.type, v, ind)
            names.append(f"{f.name!r}: {v}")
        self._stack.pop()
        # A dict display: fields in schema order, as fastavro inserts them.
        self.emit(ind, f"{t} = {{{', '.join(names)}}}")


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
