"""Reading events as JSON text from outside: strict, bounded, one error naming the place.

The JSON an agency hands ``safeshare publish`` (and the gateway to come) is
untrusted bytes. :func:`read_events` turns them into JSON values or raises
:class:`JsonTextError`, whose one line names the byte offset (and line and
column) of what is wrong — never a traceback, never the data itself:

- the text must be UTF-8 (RFC 8259 §8.1); a leading UTF-8 byte order mark is
  ignored, as §8.1 allows; any other encoding is refused at the first bad byte;
- NaN and Infinity are not JSON (RFC 8259 §6) and are refused;
- nesting deeper than :data:`MAX_DEPTH` is refused before it is parsed (no
  event nests near that deep; Python's parser would otherwise recurse);
- a key given twice in one object is refused (RFC 8259 §4 leaves it to the
  reader; which value wins is not something to guess about a child);
- an integer of more than :data:`MAX_INT_DIGITS` digits becomes a value out of
  range of any Avro number, so the codec names its field (no int() of a
  million digits);
- input over :data:`MAX_INPUT_BYTES` is refused unread.

The text is one JSON value, a JSON array of events, or JSON lines (one value
per line). Which event a problem is in is the caller's to say.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Final

from broker.codec._validate import safe_key
from broker.codec.exceptions import EncodingError

#: Deepest nesting of arrays and objects accepted (a ConcernEvent nests 5 deep).
MAX_DEPTH: Final = 64
#: Longest integer literal read as a number; longer ones are out of every Avro range.
MAX_INT_DIGITS: Final = 40
#: Largest JSON text read (many events of at most MAX_EVENT_BYTES each).
MAX_INPUT_BYTES: Final = 64 * 1024 * 1024

_BOM: Final = b"\xef\xbb\xbf"
_UTF16_32_BOMS: Final = (b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff")
# Strings whole (so brackets inside them do not count), brackets, bare constants;
# a lone quote is an unterminated string (the parser words that error).
_TOKENS: Final = re.compile(r'"(?:[^"\\]+|\\.)*"|[\[\]{}]|-?Infinity|NaN|"', re.S)
_WS: Final = re.compile(r"[ \t\r\n]*")
_OUT_OF_RANGE: Final = 10**MAX_INT_DIGITS  # beyond any Avro long


class JsonTextError(EncodingError):
    """The input is not acceptable JSON text; the message names the byte offset."""


@dataclass(frozen=True)
class Events:
    """The JSON values read, and the line each starts on (1-based)."""

    values: list[Any]
    lines: list[int]
    json_lines: bool  # one value per line, rather than one value or one array


def read_events(data: bytes, name: str = "<input>") -> Events:
    """Parse ``data`` (see module docstring); raise :class:`JsonTextError` naming ``name``."""
    if len(data) > MAX_INPUT_BYTES:
        raise JsonTextError(f"{name}: input is over {MAX_INPUT_BYTES} bytes")
    skip = len(_BOM) if data.startswith(_BOM) else 0
    if any(data.startswith(b) for b in _UTF16_32_BOMS):
        raise JsonTextError(f"{name}: byte 0: not UTF-8 (a UTF-16 or UTF-32 byte order mark)")
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data[:offset].count(b"\n") + 1
        raise JsonTextError(f"{name}: byte {offset} (line {line}): not valid UTF-8") from None
    place = _Place(data, text, skip, name)
    if not text.strip(" \t\r\n"):
        raise JsonTextError(f"{name}: no event given (empty input)")
    if not _provably_safe(text):
        _scan(text, place)

    decoder = json.JSONDecoder(
        object_pairs_hook=_no_duplicates,
        parse_constant=_no_constant,
        parse_int=_bounded_int,
    )
    values: list[Any] = []
    lines: list[int] = []
    idx = _WS.match(text, 0).end()  # type: ignore[union-attr]
    while idx < len(text):
        try:
            value, end = decoder.raw_decode(text, idx)
        except json.JSONDecodeError as exc:
            raise JsonTextError(f"{place(exc.pos)}: not valid JSON ({exc.msg})") from None
        except _Duplicate as exc:
            raise JsonTextError(
                f"{place(idx)}: the value starting here gives the key {exc.key} twice in one "
                "object"
            ) from None
        except (ValueError, RecursionError):  # pragma: no cover - _scan refuses these first
            raise JsonTextError(f"{place(idx)}: not valid JSON") from None
        values.append(value)
        lines.append(text.count("\n", 0, idx) + 1)
        gap = _WS.match(text, end).end()  # type: ignore[union-attr]
        if gap < len(text) and "\n" not in text[end:gap]:
            raise JsonTextError(
                f"{place(gap)}: not valid JSON (more after the value; JSON lines put one "
                "event per line)"
            )
        idx = gap
    if len(values) == 1 and isinstance(values[0], list):
        return Events(values[0], [lines[0]] * len(values[0]), json_lines=False)
    return Events(values, lines, json_lines=len(values) > 1)


class _Place:
    """Words for a character index of the text: byte offset, line and column."""

    def __init__(self, data: bytes, text: str, skip: int, name: str) -> None:
        self._text, self._skip, self._name = text, skip, name

    def __call__(self, pos: int) -> str:
        before = self._text[:pos]
        offset = self._skip + len(before.encode("utf-8"))
        line = before.count("\n") + 1
        column = pos - (before.rfind("\n") + 1) + 1
        return f"{self._name}: byte {offset} (line {line}, column {column})"


def _provably_safe(text: str) -> bool:
    """Whether :func:`_scan` cannot refuse ``text``, judged in C (substring counts).

    Nesting is at most the number of brackets opened, and a bare NaN or Infinity
    needs those letters somewhere; an ordinary event is cleared without the scan's
    Python loop over its tokens, anything else is scanned (the plain twin).
    """
    return ("NaN" not in text and "Infinity" not in text
            and text.count("[") + text.count("{") <= MAX_DEPTH)


def _scan(text: str, place: _Place) -> None:
    """Refuse nesting deeper than MAX_DEPTH and bare NaN/Infinity, at their place."""
    depth = 0
    for m in _TOKENS.finditer(text):
        token = m.group()
        c = token[0]
        if c == '"':
            if len(token) == 1:
                return  # unterminated string: the parser says where
        elif c in "[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise JsonTextError(
                    f"{place(m.start())}: nested more than {MAX_DEPTH} deep"
                )
        elif c in "]}":
            depth -= 1
        else:
            raise JsonTextError(
                f"{place(m.start())}: {token} is not a JSON number (RFC 8259 §6)"
            )


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = f'"{safe_key(key)}"'


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return out


def _no_constant(name: str) -> Any:  # pragma: no cover - _scan refuses them first
    raise ValueError(f"{name} is not JSON")


def _bounded_int(digits: str) -> int:
    if len(digits) > MAX_INT_DIGITS:
        return -_OUT_OF_RANGE if digits.startswith("-") else _OUT_OF_RANGE
    return int(digits)
