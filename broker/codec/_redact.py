"""Redaction: a copy of a record with every field the recipient may not see set to null.

The router redacts every event once per entitled subscriber, so the work is
split: a :class:`RedactionPlan` per schema lists every non-metadata field
(path, data class) once; for each distinct set of denied fields it compiles a
copier — closures that copy exactly the schema's fields, null the denied ones
and note which of those held a value. Policies grant the same few sets of
classes over and over, so the copier is built once per set and reused.

Semantics (docs/CONTRACTS.md, "Data classes"):

- ``metadata`` fields are always kept;
- a field whose (path, class) is not allowed becomes ``None`` whatever it held,
  records and arrays included — the schema makes every such field nullable, so
  the copy still validates;
- an allowed record, array or union is copied and its fields are judged in turn;
- keys that are not fields of the schema are not copied (fail closed).
"""

from __future__ import annotations

from collections.abc import Callable, Set
from typing import Any, Final, TypeAlias

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
    branch_segment,
    join,
    unwrap_nullable,
)
from broker.codec.exceptions import EncodingError

Allowed: TypeAlias = Callable[[str, str], bool] | Set[str]
Copier: TypeAlias = Callable[[Any, list[str]], Any]

_MAX_CACHED: Final = 1024


def _immutable(node: Node) -> bool:
    node = unwrap_nullable(node)
    return isinstance(node, Primitive | Enum | Fixed)


class RedactionPlan:
    """Per-schema redaction plan; see the module docstring."""

    def __init__(self, root: Record) -> None:
        self._root = root
        #: (path, data class) of every non-metadata field, in schema order.
        self.fields: list[tuple[str, str]] = []
        self._index: dict[tuple[int, str], int] = {}  # (id(Field), path) -> index
        self._enumerate(root, "", set())
        self._by_labels: BoundedMemo[frozenset[str], frozenset[int]] = BoundedMemo(_MAX_CACHED)
        self._copiers: BoundedMemo[frozenset[int], Copier] = BoundedMemo(_MAX_CACHED)

    def _enumerate(self, node: Node, path: str, stack: set[int]) -> None:
        if isinstance(node, Record):
            if id(node) in stack:  # pragma: no cover - recursive types are rejected by lint
                return
            stack = stack | {id(node)}
            for f in node.fields:
                fpath = join(path, f.name)
                if f.data_class != METADATA:
                    self._index[(id(f), fpath)] = len(self.fields)
                    self.fields.append((fpath, f.data_class or ""))
                self._enumerate(f.type, fpath, stack)
        elif isinstance(node, Array):
            self._enumerate(node.items, path, stack)
        elif isinstance(node, Map):
            self._enumerate(node.values, path, stack)
        elif isinstance(node, Union):
            for b in node.branches:
                self._enumerate(b, join(path, branch_segment(node, b)), stack)

    # -- choosing what is denied ----------------------------------------------------

    def denied(self, allowed: Allowed) -> frozenset[int]:
        if isinstance(allowed, Set):
            key = allowed if isinstance(allowed, frozenset) else frozenset(allowed)
            found = self._by_labels.get(key)
            if found is None:
                denied = frozenset(i for i, (_, lab) in enumerate(self.fields) if lab not in key)
                found = self._by_labels.remember(key, denied)
            return found
        return frozenset(
            i for i, (path, label) in enumerate(self.fields) if not allowed(path, label)
        )

    def copier(self, denied: frozenset[int]) -> Copier:
        found = self._copiers.get(denied)
        if found is None:
            found = self._copiers.remember(denied, self._compile(self._root, "", denied))
        return found

    def redact(self, record: Any, allowed: Allowed) -> tuple[dict[str, Any], list[str]]:
        redacted: list[str] = []
        out = self.copier(self.denied(allowed))(record, redacted)
        if len(redacted) > 1:
            redacted = list(dict.fromkeys(redacted))
        return out, redacted

    # -- compiling a copier ---------------------------------------------------------

    def _compile(self, node: Node, path: str, denied: frozenset[int]) -> Copier:
        if isinstance(node, Record):
            return self._record(node, path, denied)
        if isinstance(node, Array):
            if _immutable(node.items):
                return lambda value, redacted: list(value)
            item = self._compile(node.items, path, denied)
            return lambda value, redacted: [item(v, redacted) for v in value]
        if isinstance(node, Map):
            if _immutable(node.values):
                return lambda value, redacted: dict(value)
            val = self._compile(node.values, path, denied)
            return lambda value, redacted: {k: val(v, redacted) for k, v in value.items()}
        if isinstance(node, Union):
            return self._union(node, path, denied)
        return lambda value, redacted: value

    def _union(self, node: Union, path: str, denied: frozenset[int]) -> Copier:
        non_null = node.non_null
        if len(non_null) == 1:
            only = self._compile(non_null[0], path, denied)
            return lambda value, redacted: None if value is None else only(value, redacted)
        branches = {
            b.fullname: self._compile(b, join(path, branch_segment(node, b)), denied)
            for b in non_null
            if isinstance(b, Record)
        }
        here = path or "(root)"

        def copy_union(value: Any, redacted: list[str]) -> Any:
            if value is None or not isinstance(value, tuple):
                return value  # null, or an enum / fixed branch (immutable)
            copy_branch = branches.get(value[0]) if len(value) == 2 else None
            if copy_branch is None:
                raise EncodingError(
                    f"{here}: expected a (record name, dict) tuple naming one "
                    f"of {', '.join(branches)}"
                )
            return (value[0], copy_branch(value[1], redacted))

        return copy_union

    def _record(self, node: Record, path: str, denied: frozenset[int]) -> Copier:
        # (name, copier or None to keep the value, path to report if denied else None)
        actions: list[tuple[str, Copier | None, str | None]] = []
        for f in node.fields:
            fpath = join(path, f.name)
            index = self._index.get((id(f), fpath))
            if index is not None and index in denied:
                actions.append((f.name, None, fpath))
            elif _immutable(f.type):
                actions.append((f.name, None, None))
            else:
                actions.append((f.name, self._compile(f.type, fpath, denied), None))
        here = path or "(root)"

        def copy_record(value: Any, redacted: list[str]) -> Any:
            if type(value) is not dict:
                raise EncodingError(f"{here}: expected a record (dict)")
            out: dict[str, Any] = {}
            get = value.get
            for name, copy_field, report in actions:
                v = get(name)
                if report is not None:
                    out[name] = None
                    if v is not None:
                        redacted.append(report)
                elif copy_field is None or v is None:
                    out[name] = v
                else:
                    out[name] = copy_field(v, redacted)
            return out

        return copy_record
