"""The schema model: a small tree of nodes built from a self-contained schema.

The expanded JSON (:mod:`broker.codec._schema_files`) is turned into a tree of
nodes (:class:`Record`, :class:`Union`, ...) that the validator, JSON converter,
redactor, generated reader and writer and compatibility checker walk.
Safeshare's own rules are checked on it by :mod:`broker.codec._schema_lint`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeAlias

from broker.codec.exceptions import SchemaError

NAMESPACE: Final = "safeshare"

PRIMITIVES: Final = frozenset(
    {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}
)
NAMED_KINDS: Final = frozenset({"record", "error", "enum", "fixed"})

#: The data-class vocabulary of docs/CONTRACTS.md.
DATA_CLASSES: Final = frozenset(
    {
        "metadata",
        "pseudonym",
        "identity",
        "concern_summary",
        "location",
        "health",
        "education",
        "police",
        "social_care",
        "referrer",
        "third_party",
        "free_text",
        "consent",
    }
)
METADATA: Final = "metadata"

#: The ``format`` of a time something happened (a timestamp-millis field): it must be
#: plausible when it enters (broker.codec.times), not only a valid long.
TIME_FORMAT: Final = "event-time"
#: Values of a field's ``format`` attribute the codec enforces.
FORMATS: Final = frozenset({"uuid", "nhs-number", "upn", TIME_FORMAT})

#: Key naming a union branch in human-friendly JSON ({"type": "MissingEpisode", ...}).
JSON_TYPE_KEY: Final = "type"

_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

JSON: TypeAlias = Any


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Final = _NoDefault()


# --------------------------------------------------------------------------------------
# Model


@dataclass(eq=False)
class Primitive:
    kind: str
    logical: str | None = None


@dataclass(eq=False)
class Enum:
    fullname: str
    symbols: tuple[str, ...]
    default: str | None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.symbol_set = frozenset(self.symbols)


@dataclass(eq=False)
class Fixed:
    fullname: str
    size: int
    aliases: tuple[str, ...] = ()


@dataclass(eq=False)
class Array:
    items: Node


@dataclass(eq=False)
class Map:
    values: Node


@dataclass(eq=False)
class Union:
    branches: tuple[Node, ...]

    @property
    def nullable(self) -> bool:
        return any(isinstance(b, Primitive) and b.kind == "null" for b in self.branches)

    @property
    def null_first(self) -> bool:
        """Branch 0 is null: the single byte 0x00 is this union's null, which is
        what a redacted field is in a copy (see broker.codec._write)."""
        first = self.branches[0] if self.branches else None
        return isinstance(first, Primitive) and first.kind == "null"

    @property
    def non_null(self) -> tuple[Node, ...]:
        return tuple(
            b for b in self.branches if not (isinstance(b, Primitive) and b.kind == "null")
        )


@dataclass(eq=False)
class Field:
    name: str
    type: Node
    doc: str | None
    data_class: str | None
    default: JSON = NO_DEFAULT
    format: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT


@dataclass(eq=False)
class Record:
    fullname: str
    fields: list[Field] = field(default_factory=list)
    aliases: tuple[str, ...] = ()


Node: TypeAlias = Primitive | Enum | Fixed | Array | Map | Union | Record
Named: TypeAlias = Record | Enum | Fixed


def short_name(fullname: str) -> str:
    return fullname.rsplit(".", 1)[-1]


def describe(node: Node) -> str:
    """A short type description for messages (never a value)."""
    if isinstance(node, Primitive):
        if node.logical in ("timestamp-millis", "timestamp-micros"):
            return "timestamp"
        if node.logical == "date":
            return "date"
        return node.kind
    if isinstance(node, Enum):
        return f"enum {node.fullname}"
    if isinstance(node, Fixed):
        return f"fixed {node.fullname}"
    if isinstance(node, Record):
        return f"record {node.fullname}"
    if isinstance(node, Array):
        return f"array of {describe(node.items)}"
    if isinstance(node, Map):
        return f"map of {describe(node.values)}"
    non_null = node.non_null
    if len(non_null) == 1:
        return describe(non_null[0])
    return "one of " + ", ".join(describe(b) for b in non_null)


def unwrap_nullable(node: Node) -> Node:
    """``["null", X]`` -> X; anything else unchanged."""
    if isinstance(node, Union):
        non_null = node.non_null
        if len(non_null) == 1:
            return non_null[0]
    return node


def branch_segment(union: Union, branch: Node) -> str | None:
    """The path segment a union branch adds (docs/CONTRACTS.md, "Field paths").

    Only unions with several non-null branches add one: the branch's short name.
    """
    if len(union.non_null) < 2:
        return None
    if isinstance(branch, Record | Enum | Fixed):
        return short_name(branch.fullname)
    return describe(branch).replace(" ", "_")


def join(path: str, segment: str | None) -> str:
    if not segment:
        return path
    return f"{path}.{segment}" if path else segment


# --------------------------------------------------------------------------------------
# Names


def _qualify(name: str, namespace: str | None) -> str:
    if "." in name or not namespace:
        return name
    return f"{namespace}.{name}"


def _fullname_of(definition: Mapping[str, JSON], enclosing: str | None) -> tuple[str, str | None]:
    """(fullname, namespace for names inside) per the spec's "Names" section."""
    name = definition.get("name")
    if not isinstance(name, str) or not name:
        raise SchemaError("a named type has no name")
    if "." in name:
        return name, name.rsplit(".", 1)[0]
    namespace = definition.get("namespace", enclosing)
    if namespace is not None and not isinstance(namespace, str):
        raise SchemaError(f"{name}: namespace must be a string")
    namespace = namespace or None
    return _qualify(name, namespace), namespace


def _check_name(fullname: str) -> None:
    for part in fullname.split("."):
        if not _NAME_RE.fullmatch(part):
            raise SchemaError(f"{fullname}: not a valid Avro name")


# --------------------------------------------------------------------------------------
# Building the model from a self-contained schema


def build(schema: JSON) -> Node:
    """The node tree of a self-contained (expanded) schema."""
    names: dict[str, Named] = {}

    def node(raw: JSON, namespace: str | None, where: str) -> Node:
        if isinstance(raw, str):
            if raw in PRIMITIVES:
                return Primitive(raw)
            full = _qualify(raw, namespace)
            if full not in names:
                raise SchemaError(f"{where}: unknown type {full}")
            return names[full]
        if isinstance(raw, list):
            return Union(tuple(node(b, namespace, where) for b in raw))
        if not isinstance(raw, dict):
            raise SchemaError(f"{where}: a type must be a name, a list or an object")
        kind = raw.get("type")
        if kind in PRIMITIVES:
            logical = raw.get("logicalType")
            return Primitive(kind, logical if isinstance(logical, str) else None)
        if kind == "array":
            return Array(node(raw.get("items"), namespace, where))
        if kind == "map":
            return Map(node(raw.get("values"), namespace, where))
        if kind in NAMED_KINDS:
            full, inner_ns = _fullname_of(raw, namespace)
            if full in names:
                raise SchemaError(f"{where}: {full} is defined twice")
            aliases = tuple(_qualify(a, inner_ns) for a in raw.get("aliases") or ())
            if kind == "enum":
                symbols = raw.get("symbols")
                if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
                    raise SchemaError(f"{full}: an enum needs a list of symbols")
                default = raw.get("default")
                enum = Enum(
                    full, tuple(symbols), default if isinstance(default, str) else None, aliases
                )
                names[full] = enum
                return enum
            if kind == "fixed":
                size = raw.get("size")
                if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                    raise SchemaError(f"{full}: a fixed type needs a size")
                fixed = Fixed(full, size, aliases)
                names[full] = fixed
                return fixed
            record = Record(full, aliases=aliases)
            names[full] = record  # before the fields: a field may refer back by name
            for f in raw.get("fields") or ():
                record.fields.append(
                    Field(
                        name=f["name"],
                        type=node(f.get("type"), inner_ns, f"{full}.{f['name']}"),
                        doc=f.get("doc") if isinstance(f.get("doc"), str) else None,
                        data_class=f.get("dataClass")
                        if isinstance(f.get("dataClass"), str)
                        else None,
                        default=f.get("default", NO_DEFAULT),
                        format=f.get("format") if isinstance(f.get("format"), str) else None,
                        aliases=tuple(a for a in f.get("aliases") or () if isinstance(a, str)),
                    )
                )
            return record
        if isinstance(kind, str | list | dict):
            return node(kind, namespace, where)
        raise SchemaError(f"{where}: type has no valid 'type'")

    return node(schema, None, "(root)")


def _zero_width(node: Node, seen: set[int]) -> bool:
    """Whether a value of this type can be encoded in zero bytes."""
    if isinstance(node, Primitive):
        return node.kind == "null"
    if isinstance(node, Fixed):
        return node.size == 0
    if isinstance(node, Record):
        if id(node) in seen:
            return False
        seen.add(id(node))
        return all(_zero_width(f.type, seen) for f in node.fields)
    # enums, arrays, maps and unions always write at least one varint
    return False
