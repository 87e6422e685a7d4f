"""Validation of in-memory records, compiled once per schema.

fastavro's writer is lenient (it writes an ``int`` field's value of ``2**40``
as a long, ``True`` as ``1``, ignores unknown keys) and fastavro's validator
puts the offending *value* into its message. Safeshare messages must never carry
a value (it may be a child's personal data), so the codec validates with its own
checker: one closure per schema node, built once, with each field's path baked
in, so checking an event costs a few microseconds and an error reads
``subject.local_authority: required string missing``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import date, datetime
from typing import Any, Final, TypeAlias

from broker.codec._schema import (
    NO_DEFAULT,
    Array,
    Enum,
    Field,
    Fixed,
    Map,
    Node,
    Primitive,
    Record,
    Union,
    branch_segment,
    describe,
    join,
)
from broker.identity.nhs import canonical_nhs_number, canonical_upn, nhs_problem, upn_problem

Check: TypeAlias = Callable[[Any, list[str]], None]

INT_MIN: Final = -(2**31)
INT_MAX: Final = 2**31 - 1
LONG_MIN: Final = -(2**63)
LONG_MAX: Final = 2**63 - 1

# RFC 9562 §4 textual form: 8-4-4-4-12 hex digits.
UUID_RE: Final = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)

MISSING: Final = object()


def _uuid_problem(value: str) -> str | None:
    return None if UUID_RE.fullmatch(value) else "not a UUID (8-4-4-4-12 hex digits)"


#: A field's ``format`` (schemas/*.avsc) -> why a string is not of it (None: it is).
FORMAT_PROBLEMS: Final[dict[str, Callable[[str], str | None]]] = {
    "uuid": _uuid_problem,
    "nhs-number": nhs_problem,
    "upn": upn_problem,
}

#: A field's ``format`` -> its canonical form of typed input (JSON input is put in it).
FORMAT_CANONICAL: Final[dict[str, Callable[[str], str]]] = {
    "nhs-number": canonical_nhs_number,
    "upn": canonical_upn,
}

#: At most this many problems are listed in one error.
MAX_PROBLEMS: Final = 20


def where(path: str) -> str:
    return path or "(root)"


def got(value: Any) -> str:
    """The *type* of a value, for a message; never the value itself."""
    return "null" if value is None else type(value).__name__


def compile_check(node: Node, path: str = "") -> Check:
    """A function that appends ``path: problem`` lines for each problem in a value."""
    return _Compiler().compile(node, path)


class _Compiler:
    def __init__(self) -> None:
        self._records: dict[tuple[int, str], Check] = {}

    def compile(self, node: Node, path: str) -> Check:
        if isinstance(node, Primitive):
            return _primitive(node, path)
        if isinstance(node, Enum):
            return _enum(node, path)
        if isinstance(node, Fixed):
            return _fixed(node, path)
        if isinstance(node, Array):
            return self._array(node, path)
        if isinstance(node, Map):
            return self._map(node, path)
        if isinstance(node, Union):
            return self._union(node, path)
        return self._record(node, path)

    def _record(self, node: Record, path: str) -> Check:
        key = (id(node), path)
        if key in self._records:  # pragma: no cover - recursive types are rejected by lint
            return self._records[key]
        name_set = frozenset(f.name for f in node.fields)
        checks: list[tuple[str, Check | None, Field]] = []
        here = where(path)
        expected = f"expected {describe(node)}"

        def check(value: Any, errors: list[str]) -> None:
            if type(value) is not dict:
                errors.append(f"{here}: {expected}, got {got(value)}")
                return
            if len(value) > len(name_set) or not name_set.issuperset(value):
                for k in value:
                    if k not in name_set:
                        errors.append(f"{join(path, safe_key(k))}: unknown field")
            for name, field_check, f in checks:
                v = value.get(name, MISSING)
                if v is MISSING:
                    if f.default is NO_DEFAULT:
                        errors.append(f"{join(path, name)}: required {describe(f.type)} missing")
                    continue
                if field_check is not None:
                    field_check(v, errors)

        self._records[key] = check
        for f in node.fields:
            checks.append((f.name, self._field(f, join(path, f.name)), f))
        return check

    def _field(self, f: Field, path: str) -> Check:
        inner = self.compile(f.type, path)
        if f.format not in FORMAT_PROBLEMS:  # none, or a time's (broker.codec.times)
            return inner
        here = where(path)
        problem_of = FORMAT_PROBLEMS[f.format]

        def check_format(value: Any, errors: list[str]) -> None:
            before = len(errors)
            inner(value, errors)
            if len(errors) == before and isinstance(value, str):
                problem = problem_of(value)
                if problem is not None:
                    errors.append(f"{here}: {problem}")

        return check_format

    def _array(self, node: Array, path: str) -> Check:
        item = self.compile(node.items, path)
        here = where(path)
        expected = f"expected {describe(node)}"

        def check(value: Any, errors: list[str]) -> None:
            if type(value) is not list and type(value) is not tuple:
                errors.append(f"{here}: {expected}, got {got(value)}")
                return
            for v in value:
                item(v, errors)
                if len(errors) > MAX_PROBLEMS:
                    return

        return check

    def _map(self, node: Map, path: str) -> Check:
        item = self.compile(node.values, path)
        here = where(path)

        def check(value: Any, errors: list[str]) -> None:
            if type(value) is not dict:
                errors.append(f"{here}: expected {describe(node)}, got {got(value)}")
                return
            for k, v in value.items():
                if type(k) is not str:
                    errors.append(f"{here}: map keys must be strings")
                item(v, errors)

        return check

    def _union(self, node: Union, path: str) -> Check:
        here = where(path)
        nullable = node.nullable
        non_null = node.non_null
        if len(non_null) == 1:
            only = self.compile(non_null[0], path)

            def check_nullable(value: Any, errors: list[str]) -> None:
                if value is not None:
                    only(value, errors)

            return check_nullable

        # Several non-null branches (lint: named types only). In memory a record
        # branch is the tuple (full record name, dict) — fastavro's tuple notation,
        # docs/CONTRACTS.md; an enum or fixed branch is its plain value.
        by_name: dict[str, Check] = {}
        others: list[Check] = []
        for b in non_null:
            check_b = self.compile(b, join(path, branch_segment(node, b)))
            if isinstance(b, Record):
                by_name[b.fullname] = check_b
            else:
                others.append(check_b)
        allowed = ", ".join(by_name)

        def check_union(value: Any, errors: list[str]) -> None:
            if value is None:
                if not nullable:
                    errors.append(f"{here}: may not be null")
                return
            if type(value) is tuple:
                if len(value) == 2 and isinstance(value[0], str) and value[0] in by_name:
                    by_name[value[0]](value[1], errors)
                else:
                    errors.append(
                        f"{here}: expected a (record name, dict) tuple naming one of {allowed}"
                    )
                return
            for check_b in others:
                trial: list[str] = []
                check_b(value, trial)
                if not trial:
                    return
            errors.append(
                f"{here}: expected a (record name, dict) tuple naming one of {allowed}, "
                f"got {got(value)}"
            )

        return check_union


def safe_key(key: Any) -> str:
    # An unknown key is named so the caller can fix it; keep it short and printable.
    text = key if isinstance(key, str) else repr(type(key).__name__)
    if len(text) > 64 or not text.isprintable():
        return repr(text[:64])
    return text


def _primitive(node: Primitive, path: str) -> Check:
    here = where(path)
    kind, logical = node.kind, node.logical
    if kind == "null":

        def check_null(value: Any, errors: list[str]) -> None:
            if value is not None:
                errors.append(f"{here}: expected null, got {got(value)}")

        return check_null
    if kind == "boolean":

        def check_bool(value: Any, errors: list[str]) -> None:
            if type(value) is not bool:
                errors.append(f"{here}: expected boolean, got {got(value)}")

        return check_bool
    if kind in ("int", "long"):
        lo, hi = (INT_MIN, INT_MAX) if kind == "int" else (LONG_MIN, LONG_MAX)
        if logical in ("timestamp-millis", "timestamp-micros"):

            def check_ts(value: Any, errors: list[str]) -> None:
                if isinstance(value, datetime):
                    if value.tzinfo is None or value.utcoffset() is None:
                        errors.append(f"{here}: naive datetime; give a timezone-aware UTC time")
                elif type(value) is int:
                    if not lo <= value <= hi:
                        errors.append(f"{here}: timestamp out of range")
                else:
                    errors.append(
                        f"{here}: expected timestamp (aware datetime or int ms), got {got(value)}"
                    )

            return check_ts
        if logical == "date":

            def check_date(value: Any, errors: list[str]) -> None:
                if isinstance(value, date) and not isinstance(value, datetime):
                    return
                if type(value) is int:
                    if not lo <= value <= hi:
                        errors.append(f"{here}: date out of range")
                    return
                errors.append(
                    f"{here}: expected date (datetime.date or int days), got {got(value)}"
                )

            return check_date

        def check_int(value: Any, errors: list[str]) -> None:
            if type(value) is not int:
                errors.append(f"{here}: expected {kind}, got {got(value)}")
            elif not lo <= value <= hi:
                errors.append(f"{here}: out of range for Avro {kind}")

        return check_int
    if kind in ("float", "double"):

        def check_float(value: Any, errors: list[str]) -> None:
            if type(value) is float:
                if not math.isfinite(value):  # NaN is unequal to itself: no rule can use it
                    errors.append(f"{here}: not a finite number")
            elif type(value) is not int:
                errors.append(f"{here}: expected {kind}, got {got(value)}")

        return check_float
    if kind == "bytes":

        def check_bytes(value: Any, errors: list[str]) -> None:
            if type(value) is not bytes:
                errors.append(f"{here}: expected bytes, got {got(value)}")

        return check_bytes
    # string

    def check_string(value: Any, errors: list[str]) -> None:
        if type(value) is not str:
            errors.append(f"{here}: expected string, got {got(value)}")
        elif not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                errors.append(f"{here}: not valid Unicode (lone surrogate)")

    return check_string


def _enum(node: Enum, path: str) -> Check:
    here = where(path)
    symbols = node.symbol_set
    allowed = ", ".join(node.symbols)

    def check_enum(value: Any, errors: list[str]) -> None:
        if type(value) is not str:
            errors.append(f"{here}: expected a symbol of {node.fullname}, got {got(value)}")
        elif value not in symbols:
            errors.append(f"{here}: not a symbol of {node.fullname} (allowed: {allowed})")

    return check_enum


def _fixed(node: Fixed, path: str) -> Check:
    here = where(path)

    def check_fixed(value: Any, errors: list[str]) -> None:
        if type(value) is not bytes:
            errors.append(f"{here}: expected {node.size} bytes, got {got(value)}")
        elif len(value) != node.size:
            errors.append(f"{here}: expected exactly {node.size} bytes")

    return check_fixed


def compile_format_check(node: Node) -> Check | None:
    """A check of the ``format`` rules only (e.g. ``event_id`` is a UUID), or None
    when the schema has none.

    Decoded data already has the schema's types — the Avro reader cannot
    produce anything else — so after decoding only the rules Avro does not know
    need checking; visiting nothing else keeps decoding fast.
    """

    def has_format(n: Node, seen: set[int]) -> bool:
        if id(n) in seen:
            return False
        seen.add(id(n))
        if isinstance(n, Record):
            return any(f.format in FORMAT_PROBLEMS or has_format(f.type, seen) for f in n.fields)
        if isinstance(n, Array):
            return has_format(n.items, seen)
        if isinstance(n, Map):
            return has_format(n.values, seen)
        if isinstance(n, Union):
            return any(has_format(b, seen) for b in n.branches)
        return False

    def build(n: Node, path: str) -> Check | None:
        if not has_format(n, set()):
            return None
        if isinstance(n, Record):
            parts: list[tuple[str, Check]] = []
            for f in n.fields:
                fpath = join(path, f.name)
                inner = build(f.type, fpath)
                if f.format in FORMAT_PROBLEMS:
                    inner = _format_only(fpath, f.format, inner)
                if inner is not None:
                    parts.append((f.name, inner))

            def check_record(value: Any, errors: list[str]) -> None:
                for name, check in parts:
                    v = value.get(name)
                    if v is not None:
                        check(v, errors)

            return check_record
        if isinstance(n, Array):
            item = build(n.items, path)
            assert item is not None

            def check_array(value: Any, errors: list[str]) -> None:
                for v in value:
                    item(v, errors)

            return check_array
        if isinstance(n, Map):
            val = build(n.values, path)
            assert val is not None

            def check_map(value: Any, errors: list[str]) -> None:
                for v in value.values():
                    val(v, errors)

            return check_map
        assert isinstance(n, Union)
        by_name: dict[str, Check] = {}
        plain: list[Check] = []
        for b in n.non_null:
            check_b = build(b, join(path, branch_segment(n, b)))
            if check_b is None:
                continue
            if isinstance(b, Record) and len(n.non_null) > 1:
                by_name[b.fullname] = check_b
            else:
                plain.append(check_b)

        def check_union(value: Any, errors: list[str]) -> None:
            if type(value) is tuple:
                check_b = by_name.get(value[0])
                if check_b is not None:
                    check_b(value[1], errors)
            else:
                for check_b in plain:
                    check_b(value, errors)

        return check_union

    return build(node, "")


def _format_only(path: str, fmt: str, inner: Check | None) -> Check:
    here = where(path)
    problem_of = FORMAT_PROBLEMS[fmt]

    def check_format(value: Any, errors: list[str]) -> None:
        if isinstance(value, str):
            problem = problem_of(value)
            if problem is not None:
                errors.append(f"{here}: {problem}")
        if inner is not None:
            inner(value, errors)

    return check_format
