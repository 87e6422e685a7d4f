"""Checks the policy's ``identity`` section: the record-linkage thresholds.

::

    identity:
      link_above: "0.9"  # match probability at or above which an event is linked
      review_above: "0.5"  # at or above this (and below link_above): a person decides
      deciders: [torbay-mash]  # subscribers whose people may link and unlink children

``deciders`` is the entitlement to link and unlink (like the ``consent``
section's recorders): review items go to them, and the router quarantines a
decision from any other subscriber (NOT_ENTITLED). Absent: nobody may.

Probabilities are written as quoted decimals: the policy holds no YAML floats
(its digest is of canonical JSON, RFC 8785, where floats do not round-trip).

Absent, the defaults of :class:`broker.identity.linkage.Thresholds` apply
(measured by ``python -m bench identity``, docs/IDENTITY.md).
"""

from __future__ import annotations

import re
from collections.abc import Collection
from typing import Any, Final, Protocol

from broker.identity.linkage import Thresholds
from broker.policy._yaml import Path

_KEYS = {"link_above": False, "review_above": False, "deciders": False}
_DECIMAL: Final = re.compile(r"0\.[0-9]{1,6}")


class _Checker(Protocol):
    def problem(self, path: Path, message: str, *, key: bool = False) -> None: ...
    def mapping(self, value: Any, path: Path, keys: Any) -> dict[str, Any] | None: ...


def check_deciders(
    chk: _Checker, value: Any, path: Path, subscribers: Collection[str]
) -> tuple[str, ...]:
    """The subscribers entitled to link and unlink (``identity.deciders``)."""
    if not isinstance(value, dict) or "deciders" not in value:
        return ()
    items = value["deciders"]
    if not isinstance(items, list) or not all(isinstance(x, str) for x in items):
        chk.problem((*path, "deciders"), "identity.deciders: expected a list of subscriber ids")
        return ()
    out: list[str] = []
    for i, item in enumerate(items):
        if item not in subscribers:
            chk.problem((*path, "deciders", i),
                        f"identity.deciders: {item!r} is not a subscriber of this policy")
        elif item not in out:
            out.append(item)
    return tuple(out)


def check_identity(chk: _Checker, value: Any, path: Path) -> Thresholds:
    """The linkage thresholds; problems at their line and column."""
    default = Thresholds()
    if value is None:
        return default
    section = chk.mapping(value, path, _KEYS)
    if section is None:
        return default
    out: dict[str, float] = {"upper": default.upper, "lower": default.lower}
    for key, attr in (("link_above", "upper"), ("review_above", "lower")):
        if key not in section:
            continue
        v = section[key]
        if not isinstance(v, str) or not _DECIMAL.fullmatch(v) or not 0 < float(v) < 1:
            chk.problem(
                (*path, key),
                f'identity.{key}: expected a probability between 0 and 1, quoted ("0.995")',
            )
            continue
        out[attr] = float(v)
    if out["lower"] > out["upper"]:
        chk.problem((*path, "review_above"),
                    "identity.review_above: must not be above identity.link_above")
        return default
    return Thresholds(upper=out["upper"], lower=out["lower"])
