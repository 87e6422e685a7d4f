"""A small, strict RFC 8785 JSON Canonicalization Scheme (JCS) for a JSON subset.

The one canonical JSON of the package: audit leaves (:mod:`broker.audit.leaf`)
and the policy digest (:func:`broker.policy.engine.canonical_form`) both use it.

Only ``null``, booleans, integers in the IEEE-754 safe range (|n| <= 2**53 - 1),
strings, arrays and objects are allowed. Floats are refused: their JCS form
depends on ECMAScript number printing, and we have no use for them. Within
that subset the output is exactly RFC 8785's, so any JCS implementation
reproduces the bytes:

- no whitespace (§3.2.1);
- strings escaped as ECMAScript ``JSON.stringify`` does (§3.2.2.2): ``\\"``,
  ``\\\\``, ``\\b \\t \\n \\f \\r``, other controls as ``\\u00xx`` (lowercase
  hex), everything else literal UTF-8;
- integers in plain decimal (§3.2.2.3 for integral values in the safe range);
- object members sorted by their names as arrays of UTF-16 code units
  (§3.2.3), which is byte order of the UTF-16BE encoding.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from json.encoder import py_encode_basestring  # the ensure_ascii=False string escaper
from typing import Any

try:  # the C accelerator, same output
    from _json import encode_basestring as _encode_str
except ImportError:  # pragma: no cover
    _encode_str = py_encode_basestring

MAX_SAFE_INTEGER = 2**53 - 1

#: ``encode_string(s)`` is ``s`` as a JSON string literal, quotes included, escaped
#: as RFC 8785 §3.2.2.2 requires (the escaper of :func:`canonicalize_trusted`).
#: It does not refuse lone surrogates: encode the finished text as UTF-8, which does.
encode_string = _encode_str

JSONValue = None | bool | int | str | Sequence["JSONValue"] | Mapping[str, "JSONValue"]


class CanonicalizationError(ValueError):
    """The value is outside the supported JSON subset, or the bytes are not canonical."""


def _utf16_key(s: str) -> bytes:
    return s.encode("utf-16-be")


def _string(s: str) -> str:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError as exc:  # lone surrogates are not Unicode text (I-JSON)
        raise CanonicalizationError("string contains a lone surrogate") from exc
    out: str = _encode_str(s)
    return out


def _serialize(v: Any, out: list[str]) -> None:
    if v is None:
        out.append("null")
    elif v is True:
        out.append("true")
    elif v is False:
        out.append("false")
    elif isinstance(v, int):
        if not -MAX_SAFE_INTEGER <= v <= MAX_SAFE_INTEGER:
            raise CanonicalizationError(f"integer {v} is outside the IEEE-754 safe range")
        out.append(str(int(v)))
    elif isinstance(v, str):
        out.append(_string(v))
    elif isinstance(v, float):
        raise CanonicalizationError("floating-point numbers are not allowed")
    elif isinstance(v, Mapping):
        for k in v:
            if not isinstance(k, str):
                raise CanonicalizationError(f"object key {k!r} is not a string")
        out.append("{")
        first = True
        for k in sorted(v, key=_utf16_key):
            if not first:
                out.append(",")
            first = False
            out.append(_string(k))
            out.append(":")
            _serialize(v[k], out)
        out.append("}")
    elif isinstance(v, list | tuple):
        out.append("[")
        for i, item in enumerate(v):
            if i:
                out.append(",")
            _serialize(item, out)
        out.append("]")
    else:
        raise CanonicalizationError(f"values of type {type(v).__name__} are not allowed")


def canonicalize(value: Any) -> bytes:
    """The RFC 8785 canonical UTF-8 bytes of ``value`` (validating every value)."""
    out: list[str] = []
    _serialize(value, out)
    return "".join(out).encode("utf-8")


_fast = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), sort_keys=True, allow_nan=False, check_circular=False
)


def canonicalize_trusted(value: Mapping[str, Any]) -> bytes:
    """Fast path of :func:`canonicalize` for values already known to be in the subset.

    The caller guarantees: every object key is ASCII (so code point order is
    UTF-16 order), no floats, integers in the safe range. Python's C JSON
    encoder then writes exactly the RFC 8785 bytes: its string escaping is
    ECMAScript's. Lone surrogates still fail, at the UTF-8 encoding.
    """
    try:
        return _fast.encode(value).encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalizationError("string contains a lone surrogate") from exc


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise CanonicalizationError(f"duplicate object key {k!r}")
        d[k] = v
    return d


def _no_float(text: str) -> Any:
    raise CanonicalizationError(f"floating-point number {text} is not allowed")


def _no_constant(text: str) -> Any:
    raise CanonicalizationError(f"{text} is not JSON")


def parse_canonical(data: bytes) -> Any:
    """Parse ``data`` and insist it is already in canonical form."""
    try:
        text = data.decode("utf-8")
        value = json.loads(
            text,
            object_pairs_hook=_no_duplicates,
            parse_float=_no_float,
            parse_constant=_no_constant,
        )
    except CanonicalizationError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise CanonicalizationError(f"not JSON: {exc}") from exc
    if canonicalize(value) != data:
        raise CanonicalizationError("JSON is not in RFC 8785 canonical form")
    return value
