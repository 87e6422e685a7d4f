"""Check the policy's ``consent`` section: who may record consent, for which purposes,
and who may withdraw what another agency recorded.

The section is required: a policy that says nothing about consent does not load
(fail closed); ``recorders: []`` says plainly that no agency may record consent.
Problems carry line:column like every other check (broker.policy._check_base).
"""

from __future__ import annotations

from typing import Any

from broker.policy._check_base import CheckerBase
from broker.policy._yaml import Path
from broker.policy.model import Agency, ConsentRecorder
from broker.policy.vocabulary import AGENCY_TYPES

_CONSENT = {"recorders": True}
_RECORDER = {
    "id": True,
    "description": False,
    "agencies": False,
    "agency_types": False,
    "purposes": True,
    "withdraw_others": False,
}


def check_consent(
    ck: CheckerBase,
    value: Any,
    path: Path,
    agencies: dict[str, Agency],
    purposes: dict[str, str],
) -> tuple[ConsentRecorder, ...]:
    """The section's entitlements (an empty tuple if it is missing or wrong: problems
    are reported on ``ck``, and a policy with any problem does not load)."""
    if value is None:
        return ()  # reported by the top-level check as a missing required key
    m = ck.mapping(value, path, _CONSENT)
    if m is None or "recorders" not in m:
        return ()
    rp = (*path, "recorders")
    items = m["recorders"]
    if not isinstance(items, list):
        ck.problem(rp, f"{ck.where(rp)}: expected a list (empty: no agency may record consent)")
        return ()
    ck._ids_unique(items, rp, "consent recorder")
    out: list[ConsentRecorder] = []
    for i, body in enumerate(items):
        recorder = _recorder(ck, body, (*rp, i), agencies, purposes)
        if recorder is not None and recorder.id not in {r.id for r in out}:
            out.append(recorder)
    return tuple(out)


def _recorder(
    ck: CheckerBase, body: Any, p: Path, agencies: dict[str, Agency], purposes: dict[str, str]
) -> ConsentRecorder | None:
    m = ck.mapping(body, p, _RECORDER)
    if m is None:
        return None
    before = len(ck.problems)
    rid = ck.ident(m.get("id"), (*p, "id"), "consent recorder") if "id" in m else None
    desc = ck.string(m["description"], (*p, "description")) if "description" in m else ""
    ids = types = None
    if "agencies" in m:
        ap = (*p, "agencies")
        ids = ck.known(ck.strings(m["agencies"], ap), ap, agencies, "agency", m["agencies"])
    if "agency_types" in m:
        tp = (*p, "agency_types")
        types = ck.known(
            ck.strings(m["agency_types"], tp), tp, AGENCY_TYPES, "agency type", m["agency_types"]
        )
    if ids is None and types is None:
        ck.problem(p, f"{ck.where(p)}: name the 'agencies' or 'agency_types' it entitles")
    pp = (*p, "purposes")
    chosen: frozenset[str] = frozenset()
    if "purposes" in m:
        chosen = ck.known(ck.strings(m["purposes"], pp), pp, purposes, "purpose", m["purposes"])
    others = False
    if "withdraw_others" in m:
        others = bool(ck.boolean(m["withdraw_others"], (*p, "withdraw_others")))
    resolved = frozenset(
        a.id
        for a in agencies.values()
        if (ids is None or a.id in ids) and (types is None or a.type in types)
    )
    if len(ck.problems) > before or rid is None:
        return None
    if not resolved:
        ck.problem(p, f"consent recorder {rid!r} entitles no registered agency")
        return None
    line, col = ck.doc.place(p)
    return ConsentRecorder(rid, line, col, desc or "", resolved, chosen, others)
