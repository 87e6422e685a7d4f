"""A fast Avro binary writer for records the codec already trusts, with redaction cuts.

Why this exists: the router writes each event once per entitled subscriber, a
copy with the fields that subscriber may not see set to null. Validating and
encoding every copy with fastavro was most of the router's time (fastavro
chooses union branches by validating the value against each branch;
docs/PERFORMANCE.md). But a decoded event is already valid, and by the schema rules
(:func:`broker.codec._schema_lint.lint`) every non-``metadata`` field is
``["null", ...]``, so a redacted field always encodes as the single byte
``0x00`` (union branch 0, null). So the event is encoded *once*, noting where
each top-most non-metadata field's bytes start and end (a *cut*, with its data
class); a subscriber's copy is those bytes with every cut whose class it may
not see replaced by ``0x00``. No copy of the record, no second encoding.

The writer is generated Python source, compiled once per schema: straight-line
code for the schema's records, loops for arrays and maps, no per-value type
dispatch. Its output is byte-for-byte what fastavro writes for the same record
(tests compare the two over every example event and generated records, and
every redaction of them against :meth:`Codec.redact` + :meth:`Codec.encode`).

It trusts its input: a record the codec decoded, or one that passed
validation. Anything it does not expect (a naive datetime, a union value it
cannot place, a missing field) raises :class:`Unsupported`, and the codec falls
back to the validating fastavro path — never to guessed bytes.
"""

from __future__ import annotations

import datetime as _dt
import struct
from collections.abc import Callable, Set
from typing import Any, Final

from broker._codegen import Source
from broker._memo import BoundedMemo
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
)

#: ``(start, end, data class)`` of one top-most non-metadata field's bytes.
Cut = tuple[int, int, str]
WriteFn = Callable[[Any], tuple[bytearray, list[Cut]]]

_NULL: Final = b"\x00"
_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)
_DAYS_SHIFT: Final = _dt.date(1970, 1, 1).toordinal()
_SMALL: Final = 1 << 13


class Unsupported(Exception):
    """The fast writer cannot place this value; use the validating path."""


def _zigzag_varint(n: int) -> bytes:
    # Avro long: zig-zag, then base-128 little-endian varint (spec, "Primitive Types").
    z = (n << 1) ^ (n >> 63)
    if not 0 <= z < 1 << 64:
        raise Unsupported("long out of range")
    out = bytearray()
    while z > 0x7F:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    out.append(z)
    return bytes(out)


_TABLE: Final = {n: _zigzag_varint(n) for n in range(-_SMALL, _SMALL)}


_BIG: BoundedMemo[int, bytes] = BoundedMemo(1 << 16)


def long_bytes(n: int) -> bytes:
    """The Avro encoding of a long (or int).

    Small values come from a table; larger ones (timestamps, mostly: the same
    millisecond recurs across a batch's decisions) from a bounded cache.
    """
    if type(n) is not int:
        if isinstance(n, bool):
            return _TABLE[int(n)]
        raise Unsupported(f"not an integer: {type(n).__name__}")
    found = _TABLE.get(n) or _BIG.get(n)
    if found is None:
        found = _BIG.remember(n, _zigzag_varint(n))
    return found


def timestamp_millis(v: Any) -> int:
    """fastavro's conversion of an aware datetime to epoch milliseconds."""
    if type(v) is int:
        return v
    if isinstance(v, _dt.datetime) and v.tzinfo is not None:
        delta = v - _EPOCH
        return (delta.days * 86400 + delta.seconds) * 1000 + delta.microseconds // 1000
    raise Unsupported("timestamp is not an int or an aware datetime")


def date_days(v: Any) -> int:
    if type(v) is int:
        return v
    if isinstance(v, _dt.date) and not isinstance(v, _dt.datetime):
        return v.toordinal() - _DAYS_SHIFT
    raise Unsupported("date is not an int or a date")


_F32: Final = struct.Struct("<f").pack
_F64: Final = struct.Struct("<d").pack


class _Gen(Source):
    """Emits the source of one writer function."""

    def __init__(self) -> None:
        super().__init__(
            {
                "L": long_bytes,
                "T": _TABLE,
                "TS": timestamp_millis,
                "DAYS": date_days,
                "F32": _F32,
                "F64": _F64,
                "Unsupported": Unsupported,
            }
        )

    # -- values ------------------------------------------------------------------
    # ``cuts``: whether a non-metadata field met below starts a cut (true until
    # the first one on the path; everything under it is written whole).

    def value(self, node: Node, v: str, ind: int, cuts: bool = False) -> None:
        if isinstance(node, Primitive):
            self.primitive(node, v, ind)
        elif isinstance(node, Enum):
            table = self.const({s: long_bytes(i) for i, s in enumerate(node.symbols)}, "E")
            self.emit(ind, f"b += {table}[{v}]")
        elif isinstance(node, Fixed):
            self.emit(ind, f"if len({v}) != {node.size}: raise Unsupported('fixed size')")
            self.emit(ind, f"b += {v}")
        elif isinstance(node, Array):
            item = self.var("i")
            self.emit(ind, f"if {v}:")
            self.emit(ind + 1, f"b += L(len({v}))")
            self.emit(ind + 1, f"for {item} in {v}:")
            self.value(node.items, item, ind + 2, cuts)
            self.emit(ind, "b.append(0)")
        elif isinstance(node, Map):
            key, item, raw = self.var("k"), self.var("i"), self.var("s")
            self.emit(ind, f"if {v}:")
            self.emit(ind + 1, f"b += L(len({v}))")
            self.emit(ind + 1, f"for {key}, {item} in {v}.items():")
            self.emit(ind + 2, f"{raw} = {key}.encode()")
            self.length(raw, ind + 2)
            self.emit(ind + 2, f"b += {raw}")
            self.value(node.values, item, ind + 2, cuts)
            self.emit(ind, "b.append(0)")
        elif isinstance(node, Union):
            self.union(node, v, ind, cuts)
        elif isinstance(node, Record):
            self.record(node, v, ind, cuts)
        else:  # pragma: no cover - the model has no other node
            raise TypeError(node)

    def primitive(self, node: Primitive, v: str, ind: int) -> None:
        kind = node.kind
        if kind == "null":
            self.emit(ind, f"if {v} is not None: raise Unsupported('null')")
        elif kind == "boolean":
            self.emit(ind, f"b.append(1 if {v} else 0)")
        elif kind in ("int", "long"):
            if node.logical == "timestamp-millis":
                self.emit(ind, f"b += L(TS({v}))")
            elif node.logical == "date":
                self.emit(ind, f"b += L(DAYS({v}))")
            elif node.logical is None:
                small = f"type({v}) is int and -{_SMALL} <= {v} < {_SMALL}"
                self.emit(ind, f"b += T[{v}] if {small} else L({v})")
            else:
                self.emit(ind, f"raise Unsupported('logical type {node.logical}')")
        elif kind == "float":
            self.emit(ind, f"b += F32({v})")
        elif kind == "double":
            self.emit(ind, f"b += F64({v})")
        elif kind == "string":
            raw = self.var("s")
            self.emit(ind, f"{raw} = {v}.encode()")
            self.length(raw, ind)
            self.emit(ind, f"b += {raw}")
        elif kind == "bytes":
            self.emit(ind, f"if type({v}) is not bytes: raise Unsupported('bytes')")
            self.length(v, ind)
            self.emit(ind, f"b += {v}")
        else:  # pragma: no cover - the model has no other primitive
            raise TypeError(kind)

    def length(self, v: str, ind: int) -> None:
        """The length of ``v`` as an Avro long (lengths are small: from the table)."""
        n = self.var("n")
        self.emit(ind, f"{n} = len({v})")
        self.emit(ind, f"b += T[{n}] if {n} < {_SMALL} else L({n})")

    def union(self, node: Union, v: str, ind: int, cuts: bool) -> None:
        null_index = next(
            (
                i
                for i, b in enumerate(node.branches)
                if isinstance(b, Primitive) and b.kind == "null"
            ),
            None,
        )
        non_null = [(i, b) for i, b in enumerate(node.branches) if i != null_index]
        if null_index is not None:
            self.emit(ind, f"if {v} is None:")
            self.emit(ind + 1, f"b += {self.const(long_bytes(null_index), 'N')}")
            self.emit(ind, "else:")
            ind += 1
        if len(non_null) == 1:
            index, branch = non_null[0]
            self.emit(ind, f"b += {self.const(long_bytes(index), 'N')}")
            self.value(branch, v, ind, cuts)
            return
        # Several branches: only named types (a schema rule); records arrive as
        # (full name, dict) tuples, the in-memory shape the decoder gives.
        name, inner = self.var("n"), self.var("w")
        self.emit(ind, f"if type({v}) is not tuple: raise Unsupported('union value')")
        self.emit(ind, f"{name}, {inner} = {v}")
        first = True
        for index, branch in non_null:
            if not isinstance(branch, Record):
                continue
            self.emit(ind, f"{'if' if first else 'elif'} {name} == {branch.fullname!r}:")
            first = False
            self.emit(ind + 1, f"b += {self.const(long_bytes(index), 'N')}")
            self.record(branch, inner, ind + 1, cuts)
        if first:
            self.emit(ind, "raise Unsupported('union branch')")
        else:
            self.emit(ind, "else:")
            self.emit(ind + 1, "raise Unsupported('union branch')")

    def record(self, node: Record, r: str, ind: int, cuts: bool) -> None:
        for f in node.fields:
            v = self.var()
            if f.has_default and f.default is None:
                self.emit(ind, f"{v} = {r}.get({f.name!r})")
            else:
                self.emit(ind, f"{v} = {r}[{f.name!r}]")
            if cuts and f.data_class not in (None, METADATA):
                # A top-most non-metadata field: ["null", ...] by the schema rules,
                # so a redacted copy holds the single byte 0x00 in its place.
                t = f.type
                if not (isinstance(t, Union) and t.null_first):
                    raise TypeError(f"{node.fullname}.{f.name} is not nullable")
                start = self.var("p")
                self.emit(ind, f"if {v} is None:")
                self.emit(ind + 1, "b.append(0)")
                self.emit(ind, "else:")
                self.emit(ind + 1, f"{start} = len(b)")
                self.value(t, v, ind + 1)
                self.emit(ind + 1, f"cuts.append(({start}, len(b), {f.data_class!r}))")
            else:
                self.value(f.type, v, ind, cuts)


def compile_writer(root: Record, *, cuts: bool) -> WriteFn:
    """A function ``record -> (body bytes, cuts)`` for ``root`` (see module docstring).

    With ``cuts=False`` every field is written whole and no cuts are noted.
    """
    gen = _Gen()
    gen.emit(0, "def write(r):")
    gen.emit(1, "b = bytearray()")
    gen.emit(1, "cuts = []")
    gen.record(root, "r", 1, cuts)
    gen.emit(1, "return b, cuts")
    fn: WriteFn = gen.function("write", f"<avro writer {root.fullname}>")
    return fn


class Written:
    """One record encoded once; its redacted copies are splices of those bytes."""

    __slots__ = ("body", "cuts", "_views")

    def __init__(self, body: bytes, cuts: list[Cut]) -> None:
        self.body = body
        self.cuts = cuts
        self._views: dict[frozenset[str], bytes] = {}

    def redacted(self, allowed: Set[str]) -> bytes:
        """The body with every cut whose data class is not in ``allowed`` nulled."""
        key = allowed if isinstance(allowed, frozenset) else frozenset(allowed)
        found = self._views.get(key)
        if found is not None:
            return found
        body = self.body
        parts: list[bytes] = []
        at = 0
        for start, end, label in self.cuts:
            if label not in key:
                parts.append(body[at:start])
                parts.append(_NULL)
                at = end
        if at == 0:
            found = body
        else:
            parts.append(body[at:])
            found = b"".join(parts)
        self._views[key] = found
        return found


class FromInput(Written):
    """A :class:`Written` whose body is an inbound message's own bytes, cut while
    reading (:meth:`broker.codec.codec.Codec.decode_for_routing`): the writer's
    bytes for that record, not written again."""

    __slots__ = ()
