"""Checks the policy's ``clocks`` section and each subscriber's ``escalate_to``.

Kept apart from the rest of the checker: the timescales are the loop's
(:mod:`broker.loop.rules` parses them and knows their defaults); this module
only turns its errors into problems with the file's line and column.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Protocol

from broker.policy._yaml import Path

_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class _Checker(Protocol):
    def problem(self, path: Path, message: str) -> None: ...
    def strings(self, value: Any, path: Path) -> list[str]: ...


def check_clocks(chk: _Checker, value: Any, path: Path) -> Any:
    """The clock policy (``broker.loop.rules.ClockPolicy``; defaults when absent)."""
    from broker.loop.rules import ClockPolicyError, parse_clock_policy  # noqa: PLC0415

    try:
        return parse_clock_policy(value)
    except ClockPolicyError as exc:
        where, _, _ = str(exc).partition(":")
        chk.problem(_path(where, path), str(exc))
        return None


def check_escalate_to(
    chk: _Checker, raw: Mapping[int, Any], known: set[str], path: Path
) -> dict[int, tuple[str, ...]]:
    """Each subscriber's escalation tiers: subscriber ids, none its own."""
    out: dict[int, tuple[str, ...]] = {}
    for i, (sid, value) in raw.items():
        p = (*path, i, "escalate_to")
        ids = chk.strings(value, p)
        for j, target in enumerate(ids):
            if target not in known:
                chk.problem((*p, j), f"escalate_to: unknown subscriber {target!r}")
            elif target == sid:
                chk.problem((*p, j), f"escalate_to: {sid!r} cannot escalate to itself")
        out[i] = tuple(ids)
    return out


def _path(dotted: str, base: Path) -> Path:
    """``clocks.rules.X.stops_on`` -> ``("clocks", "rules", "X", "stops_on")``."""
    steps: list[str | int] = []
    for name, index in _STEP.findall(dotted):
        steps.append(int(index) if index else name)
    if steps[: len(base)] != list(base):
        return base
    return tuple(steps)
