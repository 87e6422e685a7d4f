"""Human-friendly JSON <-> the in-memory shape, compiled once per schema.

This is *not* Avro's JSON encoding (which wraps every non-null union value in
``{"type": value}`` and writes bytes as ISO-8859-1 code points). It is the form
a person writes in a file or reads on a terminal:

- times are ISO-8601 strings in UTC (``2024-05-01T21:40:00Z``; a naive time or
  another offset is an error, because a child's timeline must not shift by an
  hour in summer) or integers of epoch milliseconds;
- dates are ``YYYY-MM-DD``; bytes are base64;
- a union of several records is ``{"type": "MissingEpisode", ...fields}`` (short
  or full name), or fastavro's ``(full name, dict)`` tuple / a 2-element list;
- absent nullable fields are null; absent fields with a default take it.

:func:`compile_from_json` checks as it converts and reports every problem with its
field path; the result is exactly what the decoder returns for the same event
(UTC-aware datetimes truncated to milliseconds, payload tuples, every field present).
"""

from __future__ import annotations

import base64
import binascii
import copy
import math
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final, TypeAlias

from broker.codec._schema import (
    JSON_TYPE_KEY,
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
    short_name,
)
from broker.codec._validate import (
    FORMAT_CANONICAL,
    FORMAT_PROBLEMS,
    INT_MAX,
    INT_MIN,
    LONG_MAX,
    LONG_MIN,
    MISSING,
    got,
    safe_key,
    where,
)

Convert: TypeAlias = Callable[[Any, list[str]], Any]
Render: TypeAlias = Callable[[Any], Any]

EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
EPOCH_DATE: Final = date(1970, 1, 1)
_DATE_RE: Final = re.compile(r"\d{4}-\d{2}-\d{2}")


# --------------------------------------------------------------------------------------
# Avro default values in the in-memory shape


def default_value(node: Node, raw: Any) -> Any:
    """A field's JSON ``default`` as an in-memory value (Avro 1.11 spec, "Complex
    Types: Records": bytes and fixed defaults are ISO-8859-1 strings; a union's
    default belongs to its first branch)."""
    if isinstance(node, Union):
        first = node.branches[0]
        value = default_value(first, raw)
        if isinstance(first, Record) and len(node.non_null) > 1:
            return (first.fullname, value)
        return value
    if isinstance(node, Primitive):
        if raw is None:
            return None
        if node.logical in ("timestamp-millis",) and isinstance(raw, int):
            return EPOCH + timedelta(milliseconds=raw)
        if node.logical == "timestamp-micros" and isinstance(raw, int):
            return EPOCH + timedelta(microseconds=raw)
        if node.logical == "date" and isinstance(raw, int):
            return EPOCH_DATE + timedelta(days=raw)
        if node.kind == "bytes" and isinstance(raw, str):
            return raw.encode("latin-1")
        if node.kind in ("float", "double") and isinstance(raw, int):
            return float(raw)
        return raw
    if isinstance(node, Fixed):
        return raw.encode("latin-1") if isinstance(raw, str) else raw
    if isinstance(node, Enum):
        return raw
    if isinstance(node, Array):
        return [default_value(node.items, x) for x in raw or ()]
    if isinstance(node, Map):
        return {k: default_value(node.values, v) for k, v in (raw or {}).items()}
    raw = raw or {}
    return {
        f.name: default_value(f.type, raw.get(f.name, f.default))
        for f in node.fields
        if f.name in raw or f.has_default
    }


def _default_factory(f: Field) -> Callable[[], Any]:
    value = default_value(f.type, f.default)
    if isinstance(value, dict | list | tuple):
        return lambda: copy.deepcopy(value)
    return lambda: value


# --------------------------------------------------------------------------------------
# JSON -> in memory


def compile_from_json(node: Node, path: str = "") -> Convert:
    return _FromJson().compile(node, path)


class _FromJson:
    def compile(self, node: Node, path: str) -> Convert:
        if isinstance(node, Primitive):
            return _primitive_in(node, path)
        if isinstance(node, Enum):
            return _enum_in(node, path)
        if isinstance(node, Fixed):
            return _fixed_in(node, path)
        if isinstance(node, Array):
            item = self.compile(node.items, path)
            here = where(path)

            def conv_array(value: Any, errors: list[str]) -> Any:
                if not isinstance(value, list | tuple):
                    errors.append(f"{here}: expected {describe(node)}, got {got(value)}")
                    return None
                return [item(v, errors) for v in value]

            return conv_array
        if isinstance(node, Map):
            values = self.compile(node.values, path)
            here = where(path)

            def conv_map(value: Any, errors: list[str]) -> Any:
                if not isinstance(value, dict):
                    errors.append(f"{here}: expected {describe(node)}, got {got(value)}")
                    return None
                return {str(k): values(v, errors) for k, v in value.items()}

            return conv_map
        if isinstance(node, Union):
            return self._union(node, path)
        return self._record(node, path)

    def _record(self, node: Record, path: str, *, drop_type_key: bool = False) -> Convert:
        here = where(path)
        names = frozenset(f.name for f in node.fields)
        fields = [
            (
                f.name,
                self._field(f, join(path, f.name)),
                _default_factory(f) if f.has_default else None,
                describe(f.type),
            )
            for f in node.fields
        ]
        expected = f"expected {describe(node)} (a JSON object)"

        def conv_record(value: Any, errors: list[str]) -> Any:
            if not isinstance(value, dict):
                errors.append(f"{here}: {expected}, got {got(value)}")
                return None
            for k in value:
                if k not in names and not (drop_type_key and k == JSON_TYPE_KEY):
                    errors.append(f"{join(path, safe_key(k))}: unknown field")
            out: dict[str, Any] = {}
            for name, conv, default, type_text in fields:
                v = value.get(name, MISSING)
                if v is MISSING:
                    if default is None:
                        errors.append(f"{join(path, name)}: required {type_text} missing")
                    else:
                        out[name] = default()
                    continue
                out[name] = conv(v, errors)
            return out

        return conv_record

    def _field(self, f: Field, path: str) -> Convert:
        inner = self.compile(f.type, path)
        if f.format not in FORMAT_PROBLEMS:  # none, or a time's (broker.codec.times)
            return inner
        here = where(path)
        problem_of = FORMAT_PROBLEMS[f.format]
        canonical = FORMAT_CANONICAL.get(f.format)

        def conv_format(value: Any, errors: list[str]) -> Any:
            before = len(errors)
            out = inner(value, errors)
            if len(errors) == before and isinstance(out, str):
                if canonical is not None:
                    out = canonical(out)
                problem = problem_of(out)
                if problem is not None:
                    errors.append(f"{here}: {problem}")
            return out

        return conv_format

    def _union(self, node: Union, path: str) -> Convert:
        here = where(path)
        nullable = node.nullable
        non_null = node.non_null
        if len(non_null) == 1:
            only = self.compile(non_null[0], path)

            def conv_nullable(value: Any, errors: list[str]) -> Any:
                return None if value is None else only(value, errors)

            return conv_nullable

        records: dict[str, tuple[str, Convert]] = {}
        others: list[Convert] = []
        for b in non_null:
            bpath = join(path, branch_segment(node, b))
            if isinstance(b, Record):
                conv_b = self._record(b, bpath, drop_type_key=True)
                records[b.fullname] = (b.fullname, conv_b)
                records[short_name(b.fullname)] = (b.fullname, conv_b)
            else:
                others.append(self.compile(b, bpath))
        allowed = ", ".join(short_name(b.fullname) for b in non_null if isinstance(b, Record))

        def conv_union(value: Any, errors: list[str]) -> Any:
            if value is None:
                if not nullable:
                    errors.append(f"{here}: may not be null")
                return None
            if isinstance(value, dict):
                name = value.get(JSON_TYPE_KEY)
                if not isinstance(name, str) or name not in records:
                    errors.append(
                        f'{here}: give the record type as "{JSON_TYPE_KEY}", one of {allowed}'
                    )
                    return None
                fullname, conv_b = records[name]
                return (fullname, conv_b(value, errors))
            if isinstance(value, list | tuple) and len(value) == 2 and isinstance(value[0], str):
                if value[0] not in records:
                    errors.append(f"{here}: unknown record type; expected one of {allowed}")
                    return None
                fullname, conv_b = records[value[0]]
                body = value[1]
                if isinstance(body, dict) and JSON_TYPE_KEY in body:
                    errors.append(f"{join(here, JSON_TYPE_KEY)}: unknown field")
                    return None
                return (fullname, conv_b(body, errors))
            for conv in others:
                trial: list[str] = []
                out = conv(value, trial)
                if not trial:
                    return out
            errors.append(
                f"{here}: expected one of {allowed} as an object with "
                f'"{JSON_TYPE_KEY}", got {got(value)}'
            )
            return None

        return conv_union


def _primitive_in(node: Primitive, path: str) -> Convert:
    here = where(path)
    kind, logical = node.kind, node.logical
    if kind == "null":

        def conv_null(value: Any, errors: list[str]) -> Any:
            if value is not None:
                errors.append(f"{here}: expected null, got {got(value)}")
            return None

        return conv_null
    if kind == "boolean":

        def conv_bool(value: Any, errors: list[str]) -> Any:
            if type(value) is not bool:
                errors.append(f"{here}: expected boolean, got {got(value)}")
            return value

        return conv_bool
    if kind in ("int", "long"):
        lo, hi = (INT_MIN, INT_MAX) if kind == "int" else (LONG_MIN, LONG_MAX)
        if logical == "timestamp-millis":
            return _timestamp_in(here)
        if logical == "date":
            return _date_in(here)

        def conv_int(value: Any, errors: list[str]) -> Any:
            if type(value) is not int:
                errors.append(f"{here}: expected {kind}, got {got(value)}")
            elif not lo <= value <= hi:
                errors.append(f"{here}: out of range for Avro {kind}")
            return value

        return conv_int
    if kind in ("float", "double"):

        def conv_float(value: Any, errors: list[str]) -> Any:
            if type(value) is not float and type(value) is not int:
                errors.append(f"{here}: expected {kind}, got {got(value)}")
                return None
            try:
                out = float(value)
            except OverflowError:
                out = math.inf
            if not math.isfinite(out):
                errors.append(f"{here}: not a finite number")
            return out

        return conv_float
    if kind == "bytes":

        def conv_bytes(value: Any, errors: list[str]) -> Any:
            if isinstance(value, bytes):
                return value
            if not isinstance(value, str):
                errors.append(f"{here}: expected base64 text, got {got(value)}")
                return None
            try:
                return base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                errors.append(f"{here}: not valid base64")
                return None

        return conv_bytes

    def conv_string(value: Any, errors: list[str]) -> Any:
        if type(value) is not str:
            errors.append(f"{here}: expected string, got {got(value)}")
        elif not value.isascii():
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                errors.append(f"{here}: not valid Unicode (lone surrogate)")
        return value

    return conv_string


def _timestamp_in(here: str) -> Convert:
    def conv_ts(value: Any, errors: list[str]) -> Any:
        if type(value) is int:
            try:
                return EPOCH + timedelta(milliseconds=value)
            except OverflowError:
                errors.append(f"{here}: timestamp out of range")
                return None
        if isinstance(value, datetime):
            dt = value
        elif isinstance(value, str):
            try:
                dt = datetime.fromisoformat(value)
            except ValueError:
                errors.append(f"{here}: not an ISO-8601 time (e.g. 2024-05-01T21:40:00Z)")
                return None
        else:
            errors.append(
                f"{here}: expected an ISO-8601 UTC time or epoch milliseconds, got {got(value)}"
            )
            return None
        offset = dt.utcoffset()
        if offset is None:
            errors.append(f"{here}: naive time (no offset); write it in UTC with a trailing Z")
            return None
        if offset:
            errors.append(f"{here}: time is not in UTC; convert it and write a trailing Z")
            return None
        return dt.astimezone(UTC).replace(microsecond=dt.microsecond // 1000 * 1000)

    return conv_ts


def _date_in(here: str) -> Convert:
    def conv_date(value: Any, errors: list[str]) -> Any:
        if isinstance(value, date) and not isinstance(value, datetime):
            return value
        if type(value) is int:
            try:
                return EPOCH_DATE + timedelta(days=value)
            except OverflowError:
                errors.append(f"{here}: date out of range")
                return None
        if isinstance(value, str) and _DATE_RE.fullmatch(value):
            try:
                return date.fromisoformat(value)
            except ValueError:
                pass
        errors.append(f"{here}: expected a date as YYYY-MM-DD")
        return None

    return conv_date


def _enum_in(node: Enum, path: str) -> Convert:
    here = where(path)
    allowed = ", ".join(node.symbols)
    symbols = node.symbol_set

    def conv_enum(value: Any, errors: list[str]) -> Any:
        if not isinstance(value, str):
            errors.append(f"{here}: expected a symbol of {node.fullname}, got {got(value)}")
        elif value not in symbols:
            errors.append(f"{here}: not a symbol of {node.fullname} (allowed: {allowed})")
        return value

    return conv_enum


def _fixed_in(node: Fixed, path: str) -> Convert:
    here = where(path)

    def conv_fixed(value: Any, errors: list[str]) -> Any:
        raw = value
        if isinstance(value, str):
            try:
                raw = base64.b64decode(value.encode("ascii"), validate=True)
            except (binascii.Error, UnicodeEncodeError):
                errors.append(f"{here}: not valid base64")
                return None
        if not isinstance(raw, bytes) or len(raw) != node.size:
            errors.append(f"{here}: expected {node.size} bytes as base64")
            return None
        return raw

    return conv_fixed


# --------------------------------------------------------------------------------------
# In memory -> JSON (assumes a value that has passed validation)


def compile_to_json(node: Node) -> Render:
    if isinstance(node, Primitive):
        if node.logical == "timestamp-millis":
            return _render_ts
        if node.logical == "date":
            return _render_date
        if node.kind == "bytes":
            return _render_bytes
        return _identity
    if isinstance(node, Fixed):
        return _render_bytes
    if isinstance(node, Enum):
        return _identity
    if isinstance(node, Array):
        item = compile_to_json(node.items)
        return lambda value: [item(v) for v in value]
    if isinstance(node, Map):
        values = compile_to_json(node.values)
        return lambda value: {k: values(v) for k, v in value.items()}
    if isinstance(node, Union):
        non_null = node.non_null
        if len(non_null) == 1:
            only = compile_to_json(non_null[0])
            return lambda value: None if value is None else only(value)
        records = {
            b.fullname: (short_name(b.fullname), compile_to_json(b))
            for b in non_null
            if isinstance(b, Record)
        }

        def render_union(value: Any) -> Any:
            if value is None or not isinstance(value, tuple):
                return value
            short, render = records[value[0]]
            return {JSON_TYPE_KEY: short, **render(value[1])}

        return render_union
    fields = [
        (f.name, compile_to_json(f.type), _default_factory(f) if f.has_default else None)
        for f in node.fields
    ]

    def render_record(value: Any) -> Any:
        out: dict[str, Any] = {}
        for name, render, default in fields:
            if name in value:
                out[name] = render(value[name])
            elif default is not None:
                out[name] = render(default())
        return out

    return render_record


def _identity(value: Any) -> Any:
    return value


def _render_ts(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, int):
        value = EPOCH + timedelta(milliseconds=value)
    text: str = value.astimezone(UTC).isoformat(timespec="milliseconds")
    return text.replace("+00:00", "Z")


def _render_date(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, int):
        value = EPOCH_DATE + timedelta(days=value)
    return value.isoformat()


def _render_bytes(value: Any) -> Any:
    if value is None:
        return None
    return base64.b64encode(value).decode("ascii")
