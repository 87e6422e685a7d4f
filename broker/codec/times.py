"""Plausible times: when a concern happened and was reported must be believable.

These times start statutory clocks, so a ``reported_at`` of -1 (1969) or an
``occurred_at`` in 1900 or 9999 must not enter. A field whose schema gives
``"format": "event-time"`` is a time something happened; :func:`time_problems`
finds, for a record:

- a time before :data:`FLOOR_MS`, 2000-01-01T00:00:00Z. Safeshare is about
  children (and care leavers up to 25): nobody it concerns was born before
  2000, so an earlier time is a default or a mistake (0, -1, 1900-01-01), never
  a concern;
- a time more than ``future_skew_ms`` after now (the injected clock,
  :mod:`broker.clock`): what has not happened yet cannot be reported. The
  default, :data:`DEFAULT_FUTURE_SKEW_MS` (5 minutes), allows for an agency's
  clock running ahead; ``SAFESHARE_FUTURE_SKEW_S`` sets it (broker.config);
- in a ConcernEvent, ``occurred_at`` more than the same skew after
  ``reported_at``: a concern cannot arise after it was reported, and the two
  would start clocks in the wrong order. Refused, not corrected: which of the
  two is wrong is the agency's to say.

The floor and the order do not depend on the clock; the future check does, so
it is made where an event enters (publish, the API, the router), never when
stored data is read back. Messages name the field and the bound, never the value.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeAlias

from broker.codec._schema import (
    TIME_FORMAT,
    Array,
    Map,
    Node,
    Primitive,
    Record,
    Union,
    branch_segment,
    join,
)
from broker.codec.exceptions import SchemaError

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_MAX_MS: Final = (datetime.max.replace(tzinfo=UTC) - _EPOCH) // _MS

#: Earliest plausible time, 2000-01-01T00:00:00Z in epoch milliseconds.
FLOOR_MS: Final = 946_684_800_000
#: How far past now a time may be (agency clocks run ahead): 5 minutes.
DEFAULT_FUTURE_SKEW_MS: Final = 5 * 60 * 1000


@dataclass(frozen=True)
class TimeBounds:
    """The plausible range of a time something happened; see the module docstring."""

    floor_ms: int = FLOOR_MS
    future_skew_ms: int = DEFAULT_FUTURE_SKEW_MS
    # The same as datetimes, made once (decoded times are datetimes).
    floor: datetime = field(init=False, repr=False, compare=False)
    skew: timedelta = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.future_skew_ms < 0:
            raise ValueError("future_skew_ms must not be negative")
        object.__setattr__(self, "floor", _EPOCH + timedelta(milliseconds=self.floor_ms))
        object.__setattr__(self, "skew", timedelta(milliseconds=self.future_skew_ms))


class Window:
    """The plausible range at one moment, as ints and as datetimes: a decoded
    event's times are datetimes, compared as they are (no conversion per field).
    Made once per check, so kept to the cost of one datetime."""

    __slots__ = ("hi", "hi_ms", "lo", "lo_ms", "skew", "skew_ms")

    def __init__(self, now_ms: int, bounds: TimeBounds) -> None:
        self.lo_ms, self.lo = bounds.floor_ms, bounds.floor
        self.skew_ms, self.skew = bounds.future_skew_ms, bounds.skew
        self.hi_ms = now_ms + bounds.future_skew_ms
        self.hi = _EPOCH + timedelta(milliseconds=min(self.hi_ms, _MAX_MS))


DEFAULT_BOUNDS: Final = TimeBounds()

#: (record, window, problems) -> None: appends ``path: problem`` lines.
TimeCheck: TypeAlias = Callable[[Any, Window, list[str]], None]


def millis(value: Any) -> int | None:
    """Epoch milliseconds of an in-memory time (aware datetime or int), else None."""
    if type(value) is int:
        return value
    if isinstance(value, datetime) and value.utcoffset() is not None:
        return (value - _EPOCH) // _MS
    return None


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def compile_time_check(node: Node) -> TimeCheck | None:
    """The check of every ``event-time`` field under ``node``, or None if there is none."""
    check = _build(node, "", set())
    if check is None or not isinstance(node, Record):
        return check
    names = {f.name: f for f in node.fields}
    occurred, reported = names.get("occurred_at"), names.get("reported_at")
    if not (occurred and reported and occurred.format == reported.format == TIME_FORMAT):
        return check

    def check_event(value: Any, w: Window, out: list[str]) -> None:
        before = len(out)
        check(value, w, out)
        if type(value) is not dict or (
            len(out) > before
            and any(p.startswith(("occurred_at:", "reported_at:")) for p in out[before:])
        ):
            return  # a time already refused on its own is not compared as well
        at, by = value.get("occurred_at"), value.get("reported_at")
        if type(at) is datetime and type(by) is datetime and at.tzinfo and by.tzinfo:
            late = at > by + w.skew
        else:
            at_ms, by_ms = millis(at), millis(by)
            late = at_ms is not None and by_ms is not None and at_ms > by_ms + w.skew_ms
        if late:
            out.append(
                "occurred_at: after reported_at (a concern cannot arise after it was "
                "reported; give the time it arose)"
            )

    return check_event


def _build(n: Node, path: str, seen: set[int]) -> TimeCheck | None:
    if isinstance(n, Record):
        if id(n) in seen:  # pragma: no cover - recursive types are refused by lint
            return None
        seen = seen | {id(n)}
        parts: list[tuple[str, TimeCheck]] = []
        for f in n.fields:
            fpath = join(path, f.name)
            inner = _time_field(f.type, fpath) if f.format == TIME_FORMAT else None
            inner = inner or _build(f.type, fpath, seen)
            if inner is not None:
                parts.append((f.name, inner))
        if not parts:
            return None

        def check_record(value: Any, w: Window, out: list[str]) -> None:
            if type(value) is dict:
                for name, check in parts:
                    v = value.get(name)
                    if v is not None:
                        check(v, w, out)

        return check_record
    if isinstance(n, Array | Map):
        item = _build(n.items if isinstance(n, Array) else n.values, path, seen)
        if item is None:
            return None

        def check_items(value: Any, w: Window, out: list[str]) -> None:
            if isinstance(value, list | tuple | dict):
                for v in value.values() if isinstance(value, dict) else value:
                    item(v, w, out)

        return check_items
    if isinstance(n, Union):
        by_name: dict[str, TimeCheck] = {}
        plain: list[TimeCheck] = []
        for br in n.non_null:
            c = _build(br, join(path, branch_segment(n, br)), seen)
            if c is None:
                continue
            if isinstance(br, Record) and len(n.non_null) > 1:
                by_name[br.fullname] = c
            else:
                plain.append(c)
        if not by_name and not plain:
            return None

        def check_union(value: Any, w: Window, out: list[str]) -> None:
            if type(value) is tuple and len(value) == 2:
                c = by_name.get(value[0])
                if c is not None:
                    c(value[1], w, out)
            else:
                for c in plain:
                    c(value, w, out)

        return check_union
    return None


def _time_field(t: Node, path: str) -> TimeCheck:
    base = t.non_null[0] if isinstance(t, Union) and len(t.non_null) == 1 else t
    if not (isinstance(base, Primitive) and base.logical == "timestamp-millis"):
        raise SchemaError(f"{path}: format {TIME_FORMAT!r} is for timestamp-millis fields")
    here = path

    def check_time(value: Any, w: Window, out: list[str]) -> None:
        if type(value) is datetime and value.tzinfo is not None:
            early, late = value < w.lo, value > w.hi
        else:
            ms = millis(value)
            if ms is None:
                return  # not a time at all: the schema check says so
            early, late = ms < w.lo_ms, ms > w.hi_ms
        if early:
            out.append(f"{here}: before {_iso(w.lo_ms)}, not a plausible time")
        elif late:
            out.append(f"{here}: in the future (more than {w.skew_ms // 1000} s from now)")

    return check_time


