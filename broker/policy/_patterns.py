"""Checks the policy's ``patterns`` section: the detectors' thresholds and windows.

::

    patterns:
      repeat_missing: {episodes: 3, days: 30}   # one child's missing episodes
      shared_place: {children: 3, days: 28}     # children at one place
      shared_person: {children: 2, days: 90}    # children naming one adult, car or phone
      overdue_interview: {hours: 72, days: 30}  # a return with no interview within hours
      overdue_area: {children: 3, days: 28}     # children overdue in one local authority
      rising_risk: {rises: 2, days: 30}         # a child's risk level rising across events

Leave a detector out to keep its default (:data:`broker.patterns.detectors.DEFAULTS`).
"""

from __future__ import annotations

from typing import Any, Protocol

from broker.patterns.detectors import DEFAULTS, Kind, Threshold
from broker.policy._yaml import Path

_DAYS = ("days", "days", 1, 366)
# section -> (detector, its fields: (name, Threshold attribute, lowest, highest))
_SECTIONS: dict[str, tuple[str, tuple[tuple[str, str, int, int], ...]]] = {
    "repeat_missing": (Kind.REPEAT_MISSING, (("episodes", "count", 2, 1000), _DAYS)),
    "shared_place": (Kind.SHARED_PLACE, (("children", "count", 2, 1000), _DAYS)),
    "shared_person": (Kind.SHARED_PERSON, (("children", "count", 2, 1000), _DAYS)),
    "overdue_interview": (Kind.OVERDUE_INTERVIEW, (("hours", "hours", 1, 24 * 366), _DAYS)),
    "overdue_area": (Kind.OVERDUE_AREA, (("children", "count", 2, 100_000), _DAYS)),
    "rising_risk": (Kind.RISING_RISK, (("rises", "count", 1, 3), _DAYS)),
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
    for name, (kind, fields) in _SECTIONS.items():
        if name not in section:
            continue
        p = (*path, name)
        rule = chk.mapping(section[name], p, {f[0]: False for f in fields})
        if rule is None:
            continue
        values = {"count": out[kind].count, "days": out[kind].days, "hours": out[kind].hours}
        for field, attr, low, high in fields:
            v = rule.get(field)
            if v is None:
                continue
            if type(v) is not int or not low <= v <= high:
                chk.problem((*p, field),
                            f"patterns.{name}.{field}: expected a whole number from {low} to "
                            f"{high}, not {v!r}")
                continue
            values[attr] = v
        out[kind] = Threshold(**values)
    return out
