"""Loading ``.avsc`` files and expanding cross-file references into self-contained schemas.

Each named type lives in its own file (``schemas/Place.avsc`` ...). A schema that
uses a type from another file names it (``"safeshare.Place"``). To encode, and
above all to *fingerprint*, a schema must be self-contained: the Avro 1.11
specification's "Parsing Canonical Form" ([FULLNAMES], and the rule that a named
type is defined once, at its first use, and referred to by name afterwards)
yields the same canonical text in every implementation only for the expanded
schema. fastavro's ``to_parsing_canonical_form`` of a schema parsed against
separately registered named types writes only the name, so its fingerprint would
differ from Java's or the ``avro`` package's (docs/DESIGN.md, "Event contract").
``parse_schema(..., expand=True)`` does not cure it either (fastavro 1.13): it
inlines the types the top record names, but their own references (``AgencyType``
inside ``Source``) stay bare names that are never defined. :func:`expand` writes
every named type out in full at its first use, depth first, in document order —
the form every implementation reads the same way (tests/test_codec.py checks the
fingerprint against the ``avro`` package).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from broker.codec._schema import (
    JSON,
    NAMED_KINDS,
    PRIMITIVES,
    _check_name,
    _fullname_of,
    _qualify,
    short_name,
)
from broker.codec.exceptions import SchemaError

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
