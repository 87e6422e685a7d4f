"""Loading ``.avsc`` files, expanding cross-file references, and the schema model.

Each named type lives in its own file (``schemas/Place.avsc`` ...). A schema that
uses a type from another file names it (``"safeshare.Place"``). To encode, and
above all to *fingerprint*, a schema must be self-contained: the Avro 1.11
specification's "Parsing Canonical Form" ([FULLNAMES], and the rule that a named
type is defined once, at its first use, and referred to by name afterwards)
yields the same canonical text in every implementation only for the expanded
schema. fastavro's ``to_parsing_canonical_form`` of a schema parsed against
separately registered named types writes only the name, so its fingerprint would
differ from Java's or the ``avro`` package's (DESIGN.md, "Event contract").
``parse_schema(..., expand=True)`` does not cure it either (fastavro 1.13): it
inlines the types the top record names, but their own references (``AgencyType``
inside ``Source``) stay bare names that are never defined. :func:`expand` writes
every named type out in full at its first use, depth first, in document order —
the form every implementation reads the same way (tests/test_codec.py checks the
fingerprint against the ``avro`` package).

The expanded JSON is then turned into a small tree of nodes (:class:`Record`,
:class:`Union`, ...) that the validator, JSON converter, redactor and
compatibility checker walk. Building it also checks Safeshare's own rules
(:func:`lint`): every field has a ``doc`` and a ``dataClass`` from the
vocabulary in docs/CONTRACTS.md, every non-metadata field is nullable with
default null, and no type can make a hostile message hang the decoder.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
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

#: Values of a field's ``format`` attribute the codec enforces.
FORMATS: Final = frozenset({"uuid", "nhs-number", "upn"})

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
# Reading files


@dataclass(frozen=True)
class Definition:
    """A named type defined in a file, in that file's raw JSON."""

    fullname: str
    raw: Mapping[str, JSON]
    namespace: str | None  # namespace for names used inside the definition
    file: Path


def read_json(path: Path) -> JSON:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SchemaError(f"{path.name}: cannot read schema: {exc}") from exc


def _definitions_in(raw: JSON, enclosing: str | None, file: Path) -> Iterator[Definition]:
    """Every named type defined anywhere inside ``raw`` (inline definitions too)."""
    if isinstance(raw, list):
        for branch in raw:
            yield from _definitions_in(branch, enclosing, file)
    elif isinstance(raw, dict):
        kind = raw.get("type")
        if kind in NAMED_KINDS:
            fullname, namespace = _fullname_of(raw, enclosing)
            yield Definition(fullname, raw, namespace, file)
            if kind in ("record", "error"):
                for f in raw.get("fields") or ():
                    if isinstance(f, dict):
                        yield from _definitions_in(f.get("type"), namespace, file)
        elif kind == "array":
            yield from _definitions_in(raw.get("items"), enclosing, file)
        elif kind == "map":
            yield from _definitions_in(raw.get("values"), enclosing, file)
        elif isinstance(kind, dict | list):
            yield from _definitions_in(kind, enclosing, file)


def read_dir(schemas_dir: Path) -> dict[str, Definition]:
    """All named types defined by the ``*.avsc`` files directly in ``schemas_dir``.

    A file holds one named type and is called after its short name
    (``Place.avsc``), so a reader can find a type's file from its name.
    """
    if not schemas_dir.is_dir():
        raise SchemaError(f"{schemas_dir}: schemas directory not found")
    found: dict[str, Definition] = {}
    files = sorted(schemas_dir.glob("*.avsc"))
    if not files:
        raise SchemaError(f"{schemas_dir}: no .avsc files")
    for path in files:
        raw = read_json(path)
        if not isinstance(raw, dict) or raw.get("type") not in NAMED_KINDS:
            raise SchemaError(f"{path.name}: a schema file must hold one named type")
        top, _ = _fullname_of(raw, None)
        if short_name(top) != path.stem:
            raise SchemaError(f"{path.name}: defines {top}; name the file {short_name(top)}.avsc")
        for definition in _definitions_in(raw, None, path):
            _check_name(definition.fullname)
            if definition.fullname in found:
                other = found[definition.fullname].file.name
                raise SchemaError(
                    f"{path.name}: {definition.fullname} is already defined in {other}"
                )
            found[definition.fullname] = definition
    return found


# --------------------------------------------------------------------------------------
# Expansion


def expand(fullname: str, definitions: Mapping[str, Definition]) -> dict[str, JSON]:
    """The self-contained schema of ``fullname``: every named type it uses written
    out in full at its first use (depth first, document order), later uses by
    full name. Docs, ``dataClass`` and other attributes are kept.
    """
    defined: set[str] = set()

    def walk(raw: JSON, namespace: str | None, where: str) -> JSON:
        if isinstance(raw, str):
            if raw in PRIMITIVES:
                return raw
            full = _qualify(raw, namespace)
            if full in defined:
                return full
            if full not in definitions:
                raise SchemaError(f"{where}: unknown type {full}")
            d = definitions[full]
            return walk_named(d.raw, d.namespace, where)
        if isinstance(raw, list):
            return [walk(branch, namespace, where) for branch in raw]
        if not isinstance(raw, dict):
            raise SchemaError(f"{where}: a type must be a name, a list or an object")
        kind = raw.get("type")
        if kind in NAMED_KINDS:
            return walk_named(raw, namespace, where)
        if kind == "array":
            return {**raw, "items": walk(raw.get("items"), namespace, where)}
        if kind == "map":
            return {**raw, "values": walk(raw.get("values"), namespace, where)}
        if kind in PRIMITIVES:
            return dict(raw)
        if isinstance(kind, str | list | dict):
            # {"type": "safeshare.Place"}: a reference wrapped in an object.
            return walk(kind, namespace, where)
        raise SchemaError(f"{where}: type has no valid 'type'")

    def walk_named(raw: Mapping[str, JSON], enclosing: str | None, where: str) -> JSON:
        full, namespace = _fullname_of(raw, enclosing)
        if full in defined:
            # Already written out (read_dir keeps definitions unique, so this is the
            # same one, e.g. an inline type first used from another file).
            return full
        defined.add(full)
        out: dict[str, JSON] = dict(raw)
        # Write the full name out so the definition means the same wherever it lands.
        out["name"] = short_name(full)
        if "." in full:
            out["namespace"] = full.rsplit(".", 1)[0]
        else:
            out.pop("namespace", None)
        if raw.get("type") in ("record", "error"):
            fields = raw.get("fields")
            if not isinstance(fields, list):
                raise SchemaError(f"{full}: a record needs a list of fields")
            new_fields = []
            for f in fields:
                if not isinstance(f, dict) or not isinstance(f.get("name"), str):
                    raise SchemaError(f"{full}: every field needs a name")
                new_fields.append({**f, "type": walk(f.get("type"), namespace, full)})
            out["fields"] = new_fields
        return out

    if fullname not in definitions:
        raise SchemaError(f"unknown type {fullname}")
    d = definitions[fullname]
    result = walk_named(d.raw, d.namespace, fullname)
    assert isinstance(result, dict)
    return result


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


# --------------------------------------------------------------------------------------
# Safeshare's schema rules


@dataclass(frozen=True)
class LintProblem:
    """A broken rule, named by the record and field that own it."""

    owner: str  # full name of the record holding the field (or of the named type)
    field: str  # field name, "" for a problem with the type itself
    path: str  # where it was met, from the root being checked
    reason: str


def lint(root: Node) -> list[LintProblem]:
    """Safeshare's schema rules; an empty list when ``root`` keeps them all.

    - every field has a non-empty ``doc`` and a ``dataClass`` from the vocabulary;
    - a field whose class is not ``metadata`` is ``["null", ...]`` with default null,
      so a redacted copy still validates against the same schema;
    - every field under a non-metadata field carries the same class, so redacting
      the outer field and redacting each field within mean the same thing;
    - named types live in the ``safeshare`` namespace;
    - a record used in a union of several records has no field called ``type``
      (the branch key of human-friendly JSON);
    - no recursive type, and no array or map whose items can encode to zero bytes:
      either would let a few hostile bytes make the decoder loop or recurse
      without consuming input;
    - a union with several non-null branches holds only named types, so each
      branch has a short name for field paths.
    """
    problems: list[LintProblem] = []
    seen_named: set[int] = set()

    def field_rules(record: Record, f: Field, path: str, inherited: str | None) -> str | None:
        def add(reason: str) -> None:
            problems.append(LintProblem(record.fullname, f.name, path, reason))

        if not f.doc or not f.doc.strip():
            add("field has no doc")
        label = f.data_class
        if label is None:
            add("field has no dataClass")
        elif label not in DATA_CLASSES:
            add(f"dataClass {label!r} is not in the vocabulary ({', '.join(sorted(DATA_CLASSES))})")
        elif inherited is not None and label != inherited:
            add(
                f"dataClass {label} inside a field of class {inherited} (at {path}); fields "
                "within a non-metadata field must share its class"
            )
        if label is not None and label != METADATA:
            t = f.type
            if not (
                isinstance(t, Union)
                and t.branches
                and isinstance(t.branches[0], Primitive)
                and t.branches[0].kind == "null"
            ):
                add(f'{label} field must be nullable: ["null", ...]')
            elif f.default is not None:
                add(f"{label} field must have default null")
        if f.format is not None and f.format not in FORMATS:
            add(f"unknown format {f.format!r}")
        if inherited is not None:
            return inherited
        return label if label not in (None, METADATA) else None

    def walk(
        node: Node,
        path: str,
        inherited: str | None,
        stack: tuple[Named, ...],
        owner: tuple[str, str],
    ) -> None:
        if isinstance(node, Record | Enum | Fixed) and id(node) not in seen_named:
            seen_named.add(id(node))
            if not node.fullname.startswith(NAMESPACE + "."):
                problems.append(
                    LintProblem(node.fullname, "", path, f"not in namespace {NAMESPACE}")
                )
        if isinstance(node, Record):
            if node in stack:
                problems.append(LintProblem(*owner, path, f"{node.fullname} is recursive"))
                return
            names: set[str] = set()
            for f in node.fields:
                fpath = join(path, f.name)
                if f.name in names:
                    problems.append(
                        LintProblem(node.fullname, f.name, fpath, "field defined twice")
                    )
                names.add(f.name)
                label = field_rules(node, f, fpath, inherited)
                walk(f.type, fpath, label, (*stack, node), (node.fullname, f.name))
        elif isinstance(node, Array | Map):
            inner = node.items if isinstance(node, Array) else node.values
            if _zero_width(inner, set()):
                problems.append(
                    LintProblem(
                        *owner,
                        path,
                        "items can encode to zero bytes; a "
                        "hostile count would make the decoder loop",
                    )
                )
            walk(inner, path, inherited, stack, owner)
        elif isinstance(node, Union):
            non_null = node.non_null
            if len(node.branches) - len(non_null) > 1:
                problems.append(LintProblem(*owner, path, "union holds null twice"))
            if len(non_null) > 1:
                for b in non_null:
                    if not isinstance(b, Record | Enum | Fixed):
                        problems.append(
                            LintProblem(
                                *owner, path, "a union of several types may hold only named types"
                            )
                        )
                        break
                    if isinstance(b, Record) and any(f.name == JSON_TYPE_KEY for f in b.fields):
                        problems.append(
                            LintProblem(
                                b.fullname,
                                JSON_TYPE_KEY,
                                path,
                                f"a record in a union may not have a field named {JSON_TYPE_KEY}",
                            )
                        )
            for b in node.branches:
                walk(b, join(path, branch_segment(node, b)), inherited, stack, owner)

    walk(root, "", None, (), ("", ""))
    return problems


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


def named_records(root: Node) -> Iterator[Record]:
    """Every record reachable from ``root``, each once."""
    seen: set[int] = set()

    def walk(node: Node) -> Iterator[Record]:
        if id(node) in seen:
            return
        seen.add(id(node))
        if isinstance(node, Record):
            yield node
            for f in node.fields:
                yield from walk(f.type)
        elif isinstance(node, Array):
            yield from walk(node.items)
        elif isinstance(node, Map):
            yield from walk(node.values)
        elif isinstance(node, Union):
            for b in node.branches:
                yield from walk(b)

    yield from walk(root)


def dumps(value: JSON, indent: int = 0, width: int = 96, lead: int = 0) -> str:
    """JSON for schema files: objects and lists on one line when they fit in ``width``."""
    compact = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if len(compact) + indent + lead <= width or not isinstance(value, dict | list):
        return compact
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [
            f"{pad}{json.dumps(k)}: {dumps(v, indent + 2, width, len(json.dumps(k)) + 2)}"
            for k, v in value.items()
        ]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + dumps(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
