"""Reading a schema directory: every record schema parsed every way the codec needs it.

The current schemas (one named type per ``.avsc``) and the kept versions under
``history/<record>/<n>.avsc``, each as an :class:`_Entry`: the expanded JSON,
fastavro's parsed form, our own tree (:mod:`broker.codec._schema`), the Parsing
Canonical Form and its CRC-64-AVRO fingerprint (Avro 1.11 specification,
"Single-object encoding").
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from fastavro import parse_schema
from fastavro.schema import to_parsing_canonical_form

from broker.codec import _schema, _schema_files, _schema_lint
from broker.codec._fingerprint import crc64_avro, header
from broker.codec._schema import Array, Map, Node, Record, Union, branch_segment, join
from broker.codec.exceptions import SchemaError

_HISTORY: Final = "history"
_VERSION_FILE: Final = re.compile(r"([1-9][0-9]*)\.avsc")


@dataclass(frozen=True)
class SchemaVersion:
    """A writer schema the codec can decode: a current schema or a kept version."""

    name: str
    version: int | None  # None for the current schema
    fingerprint: bytes


@dataclass(eq=False)
class _Entry:
    """One self-contained schema, parsed every way the codec needs it."""

    name: str
    version: int | None
    raw: dict[str, Any]  # expanded JSON, docs and dataClass kept
    parsed: Any  # fastavro's parsed schema
    node: Record
    canonical: str
    fingerprint: bytes
    header: bytes = field(init=False)

    def __post_init__(self) -> None:
        self.header = header(self.fingerprint)


def _entry(raw: dict[str, Any], version: int | None, where: str) -> _Entry:
    try:
        parsed = parse_schema(copy.deepcopy(raw))
        canonical = to_parsing_canonical_form(parsed)
    except Exception as exc:  # fastavro raises a variety of types for bad schemas
        raise SchemaError(f"{where}: not a valid Avro schema: {exc}") from exc
    node = _schema.build(raw)
    if not isinstance(node, Record):
        raise SchemaError(f"{where}: a message schema must be a record")
    return _Entry(
        name=node.fullname,
        version=version,
        raw=raw,
        parsed=parsed,
        node=node,
        canonical=canonical,
        fingerprint=crc64_avro(canonical.encode("utf-8")),
    )


@dataclass(frozen=True)
class LoadedSchemas:
    """What :func:`load_dir` found: current records, kept versions, broken rules."""

    directory: Path
    current: dict[str, _Entry]
    history: dict[str, dict[int, _Entry]]
    lint: list[tuple[str, str, str]]  # (record, field, reason) of each broken rule


def load_dir(schemas_dir: Path) -> LoadedSchemas:
    """Read ``schemas_dir`` (one named type per ``.avsc``) and ``schemas_dir/history``.

    Raises :class:`SchemaError` for files that cannot be read or parsed; broken
    Safeshare rules are returned in ``lint`` so the compatibility check can list
    them all (:meth:`Codec.from_dir` refuses them).
    """
    definitions = _schema_files.read_dir(schemas_dir)
    current: dict[str, _Entry] = {}
    lint: dict[tuple[str, str, str], None] = {}  # (owner, field, reason), deduplicated
    for name, definition in definitions.items():
        if definition.raw.get("type") not in ("record", "error"):
            continue
        entry = _entry(_schema_files.expand(name, definitions), None, definition.file.name)
        current[name] = entry
        for p in _schema_lint.lint(entry.node):
            lint[(p.owner, p.field, p.reason)] = None

    history: dict[str, dict[int, _Entry]] = {}
    history_dir = schemas_dir / _HISTORY
    if history_dir.is_dir():
        for sub in sorted(history_dir.iterdir()):
            if not sub.is_dir():
                continue
            fullname = sub.name if "." in sub.name else f"{_schema.NAMESPACE}.{sub.name}"
            versions: dict[int, _Entry] = {}
            for path in sorted(sub.glob("*.avsc")):
                match = _VERSION_FILE.fullmatch(path.name)
                where = f"{_HISTORY}/{sub.name}/{path.name}"
                if match is None:
                    raise SchemaError(f"{where}: a kept version is named <n>.avsc, n from 1")
                raw = _schema_files.read_json(path)
                if not isinstance(raw, dict):
                    raise SchemaError(f"{where}: not a record schema")
                entry = _entry(raw, int(match.group(1)), where)
                if entry.name != fullname:
                    raise SchemaError(f"{where}: defines {entry.name}, expected {fullname}")
                versions[entry.version or 0] = entry
            if versions:
                history[fullname] = versions
    return LoadedSchemas(schemas_dir, current, history, list(lint))


def _leaf_classes(root: Record) -> dict[str, str]:
    """``{field path: data class}`` of every leaf under ``root`` (the policy's vocabulary)."""
    out: dict[str, str] = {}

    def walk(node: Node, path: str, label: str) -> None:
        if isinstance(node, Record):
            for f in node.fields:
                walk(f.type, join(path, f.name), f.data_class or "")
        elif isinstance(node, Array):
            walk(node.items, path, label)
        elif isinstance(node, Map):
            walk(node.values, path, label)
        elif isinstance(node, Union) and len(node.non_null) > 1:
            for b in node.non_null:
                walk(b, join(path, branch_segment(node, b)), label)
        elif isinstance(node, Union):
            for b in node.non_null:
                walk(b, path, label)
        else:
            out[path] = label

    walk(root, "", "")
    return out
