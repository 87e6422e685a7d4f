"""Checks the policy's ``patterns`` section: the detectors' thresholds and windows.

::

    patterns:
      repeat_missing: {episodes: 3, days: 30}   # one child's missing episodes
      shared_place: {children: 3, days: 28}     # children at one place
      shared_person: {children: 2, days: 90}    # children naming one adult, car or phone

Leave a detector out to keep its default (:data:`broker.patterns.detectors.DEFAULTS`).
"""

from __future__ import annotations

from typing import Any, Protocol

from broker.patterns.detectors import DEFAULTS, Kind, Threshold
from broker.policy._yaml import Path

_SECTIONS = {
    "repeat_missing": (Kind.REPEAT_MISSING, "episodes"),
    "shared_place": (Kind.SHARED_PLACE, "children"),
    "shared_person": (Kind.SHARED_PERSON, "children"),
}


class _Checker(Protocol):
    def problem(self, path: Path, message: str, *, key: bool = False) -> None: ...
    def mapping(self, value: Any, path: Path, keys: Any) -> dict[str, Any] | None: ...


def check_patterns(chk: _Checker, value: Any, path: Path) -> dict[str, Threshold]:
    """Each detector's threshold; problems at their line and column."""
    out = dict(DEFAULTS)
    if value is None:
        return out
    section = chk.mapping(value, path, dict.fromkeys(_SECTIONS, False))
    if section is None:
        return out
    for name, (kind, counted) in _SECTIONS.items():
        if name not in section:
            continue
        p = (*path, name)
        rule = chk.mapping(section[name], p, {counted: False, "days": False})
        if rule is None:
            continue
        count, days = out[kind].count, out[kind].days
        for field, low, high in ((counted, 2, 1000), ("days", 1, 366)):
            v = rule.get(field)
            if v is None:
                continue
            if type(v) is not int or not low <= v <= high:
                chk.problem((*p, field),
                            f"patterns.{name}.{field}: expected a whole number from {low} to "
                            f"{high}, not {v!r}")
                continue
            if field == "days":
                days = v
            else:
                count = v
        out[kind] = Threshold(count, days)
    return out
