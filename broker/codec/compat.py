"""Backward compatibility: the current schemas must read everything ever written.

Every version of a message schema that has been used is kept under
``schemas/history/<Name>/<n>.avsc`` (self-contained, expanded). A consumer
decodes with the *current* schema as reader, so for each kept version the
current schema must be able to resolve data written with it, by the rules of
the Avro 1.11 specification, "Schema Resolution":

- records match by (unqualified) name or a reader alias; a reader field absent
  from the writer needs a default; writer fields the reader lacks are skipped;
- enums match by name; a writer symbol the reader lacks needs a reader enum
  ``default``;
- primitives must be equal or promotable (int -> long, float, double;
  long -> float, double; float -> double; string <-> bytes);
- arrays and maps resolve their items and values; fixed types match name and size;
- every branch of a writer union must match some branch of the reader's
  (or the reader's single type).

On top of the spec, a changed logical type is refused (a ``long`` read as
micros instead of millis is "compatible" bytes and a wrong date), and the
latest kept version must be the current schema — otherwise data written with
the current schema becomes undecodable as soon as it changes again. The current
schemas must also keep Safeshare's rules (doc and dataClass on every field,
non-metadata fields nullable; see :func:`broker.codec._schema_lint.lint`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from broker.codec._schema import (
    NAMESPACE,
    Array,
    Enum,
    Fixed,
    Map,
    Node,
    Primitive,
    Record,
    Union,
    branch_segment,
    describe,
    join,
    short_name,
)
from broker.codec._schema_files import dumps
from broker.codec.exceptions import CodecError, IncompatibleSchemaError

if TYPE_CHECKING:
    from broker.codec.codec import Codec

#: Avro 1.11 spec, "Schema Resolution": the writer's type may be promoted to the reader's.
PROMOTIONS: frozenset[tuple[str, str]] = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)


@dataclass(frozen=True)
class Problem:
    """One reason a schema change is not allowed.

    ``version`` is the kept writer version that cannot be read, or None for a
    problem with the current schema itself.
    """

    schema: str
    version: int | None
    path: str
    reason: str

    def __str__(self) -> str:
        which = self.schema if self.version is None else f"{self.schema} v{self.version}"
        where = f"{self.path}: " if self.path else ""
        return f"{which}: {where}{self.reason}"


def resolution_problems(reader: Node, writer: Node) -> list[tuple[str, str]]:
    """Why data written with ``writer`` cannot be read with ``reader``, as
    ``(path, reason)`` pairs; empty when it can."""
    out: list[tuple[str, str]] = []
    _resolve(reader, writer, "", out, set())
    return out


def _names(node: Record | Enum | Fixed) -> set[str]:
    return {short_name(node.fullname), *(short_name(a) for a in node.aliases)}


def _matches(reader: Node, writer: Node) -> bool:
    """Whether two schemas "match" in the spec's sense (used to pick a union branch)."""
    if isinstance(reader, Primitive) and isinstance(writer, Primitive):
        return reader.kind == writer.kind or (writer.kind, reader.kind) in PROMOTIONS
    if isinstance(reader, Record) and isinstance(writer, Record):
        return short_name(writer.fullname) in _names(reader)
    if isinstance(reader, Enum) and isinstance(writer, Enum):
        return short_name(writer.fullname) in _names(reader)
    if isinstance(reader, Fixed) and isinstance(writer, Fixed):
        return short_name(writer.fullname) in _names(reader) and reader.size == writer.size
    if isinstance(reader, Array) and isinstance(writer, Array):
        return True
    return isinstance(reader, Map) and isinstance(writer, Map)


def _resolve(
    reader: Node,
    writer: Node,
    path: str,
    out: list[tuple[str, str]],
    seen: set[tuple[int, int]],
) -> None:
    key = (id(reader), id(writer))
    if key in seen:
        return
    seen.add(key)
    here = path or "(root)"

    if isinstance(writer, Union):
        for branch in writer.branches:
            bpath = join(path, branch_segment(writer, branch))
            if isinstance(reader, Union):
                target = next((r for r in reader.branches if _matches(r, branch)), None)
                if target is None:
                    out.append(
                        (
                            bpath or "(root)",
                            f"writer's {describe(branch)} matches no type in the reader's union",
                        )
                    )
                    continue
                _resolve(target, branch, bpath, out, seen)
            elif _matches(reader, branch):
                _resolve(reader, branch, bpath, out, seen)
            else:
                out.append(
                    (
                        bpath or "(root)",
                        f"writer's union may hold {describe(branch)}, "
                        f"which the reader's {describe(reader)} cannot read",
                    )
                )
        return
    if isinstance(reader, Union):
        target = next((r for r in reader.branches if _matches(r, writer)), None)
        if target is None:
            out.append((here, f"writer's {describe(writer)} matches no type in the reader's union"))
        else:
            _resolve(target, writer, path, out, seen)
        return
    if not _matches(reader, writer):
        out.append((here, f"type changed from {describe(writer)} to {describe(reader)}"))
        return

    if isinstance(reader, Primitive):
        assert isinstance(writer, Primitive)
        if reader.logical != writer.logical:
            out.append(
                (
                    here,
                    f"logical type changed from {writer.logical or 'none'} to "
                    f"{reader.logical or 'none'}",
                )
            )
    elif isinstance(reader, Record):
        assert isinstance(writer, Record)
        by_name = {f.name: f for f in writer.fields}
        for f in reader.fields:
            wf = by_name.get(f.name)
            if wf is None:
                wf = next((by_name[a] for a in f.aliases if a in by_name), None)
            fpath = join(path, f.name)
            if wf is None:
                if not f.has_default:
                    out.append((fpath, "field added without a default"))
                continue
            _resolve(f.type, wf.type, fpath, out, seen)
    elif isinstance(reader, Enum):
        assert isinstance(writer, Enum)
        removed = [s for s in writer.symbols if s not in reader.symbol_set]
        if removed and reader.default is None:
            out.append((here, f"symbols removed without an enum default: {', '.join(removed)}"))
        if reader.default is not None and reader.default not in reader.symbol_set:
            out.append((here, "enum default is not one of its symbols"))
    elif isinstance(reader, Array):
        assert isinstance(writer, Array)
        _resolve(reader.items, writer.items, path, out, seen)
    elif isinstance(reader, Map):
        assert isinstance(writer, Map)
        _resolve(reader.values, writer.values, path, out, seen)
    # Fixed: name and size were checked by _matches.


def check_compatibility(codec_or_dir: Codec | Path) -> list[Problem]:
    """Every reason the current schemas break old data or Safeshare's schema rules.

    Given a directory, loads it without stopping at the first problem, so a
    broken schema is reported like any other problem. An empty list means the
    change is safe.
    """
    from broker.codec._load import load_dir
    from broker.codec.codec import Codec

    if isinstance(codec_or_dir, Codec):
        codec = codec_or_dir
        problems: list[Problem] = []
    else:
        try:
            loaded = load_dir(Path(codec_or_dir))
        except CodecError as exc:
            return [Problem("(schemas)", None, "", str(exc))]
        problems = [Problem(owner, None, field, reason) for owner, field, reason in loaded.lint]
        codec = Codec(loaded, check_rules=False)

    for name, versions in sorted(codec._history.items()):
        current = codec._current.get(name)
        if current is None:
            problems.append(
                Problem(
                    name,
                    None,
                    "",
                    "schema removed, but data written with "
                    f"{len(versions)} kept version(s) must stay readable",
                )
            )
            continue
        for version in sorted(versions):
            writer = versions[version]
            for path, reason in resolution_problems(current.node, writer.node):
                problems.append(Problem(name, version, path, reason))
        latest = max(versions)
        if versions[latest].fingerprint != current.fingerprint:
            problems.append(
                Problem(
                    name,
                    None,
                    "",
                    f"current schema (fingerprint "
                    f"{current.fingerprint.hex()}) is not kept in history; add it as "
                    f"history/{short_name(name)}/{latest + 1}.avsc "
                    "(safeshare schemas snapshot)",
                )
            )
    return problems


def assert_compatible(codec_or_dir: Codec | Path) -> None:
    """Raise :class:`IncompatibleSchemaError` listing every problem, if there are any."""
    problems = check_compatibility(codec_or_dir)
    if problems:
        raise IncompatibleSchemaError(str(p) for p in problems)


def snapshot(schemas_dir: Path, names: Iterable[str] = ()) -> list[Path]:
    """Keep the current version of message schemas in ``schemas_dir/history``.

    For each schema that already has a history, and each of ``names``, writes
    the current expanded schema as ``history/<Name>/<n+1>.avsc`` unless the
    latest kept version already is the current one. Returns the files written.
    Refuses (:class:`~broker.codec.exceptions.SchemaError`) schemas that break
    Safeshare's rules: such a version must never be written.
    """
    from broker.codec.codec import Codec

    codec = Codec.from_dir(schemas_dir)
    wanted = {n if "." in n else f"{NAMESPACE}.{n}" for n in names}
    written: list[Path] = []
    for name in sorted(wanted | set(codec._history)):
        current = codec._entry(name)
        versions = codec._history.get(current.name, {})
        latest = max(versions, default=0)
        if latest and versions[latest].fingerprint == current.fingerprint:
            continue
        path = schemas_dir / "history" / short_name(current.name) / f"{latest + 1}.avsc"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(current.raw) + "\n", encoding="utf-8")
        written.append(path)
    return written
