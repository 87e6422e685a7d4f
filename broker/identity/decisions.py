"""A person's link and unlink of two children, applied to the identity index.

Between the policy's thresholds the router routes an event under a
provisional pseudonym of its own and offers the MASH the candidate it may
belong to (an IdentityReview). A person decides:

- :func:`link` (``survivor``, ``other``): one child. ``other``'s records move
  to ``survivor`` (later events that match them follow the survivor), and the
  survivor keeps them apart as ``merged[other]`` with ``other``'s anchor, so
  that an unlink can give them back. ``other`` leaves the index (its entry is
  tombstoned). Children already merged into ``other`` move with it.
- :func:`unlink` (``survivor``, ``other``): ``other`` was wrongly linked. Its
  own records go back to it under its own pseudonym; the shares made under
  the merged identity since the link are returned, for the audit leaf (whoever
  received them holds a chronology that mixed two children).

Pure functions on :class:`~broker.identity.linkage.Index`; the router's side
(topics, audit, entitlement) is broker/routing/identity_decisions.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.identity.linkage import Features, Index


@dataclass(frozen=True)
class Applied:
    """What a decision changed: the pseudonyms whose index entries must be rewritten
    (None: tombstone) and, for an unlink, the shares made under the merged identity."""

    rewrite: tuple[str, ...]
    tombstone: tuple[str, ...] = ()
    shares: tuple[str, ...] = ()


class DecisionProblem(ValueError):
    """The decision cannot be applied to the index as it is (named in the message)."""


def link(index: Index, survivor: str, other: str) -> Applied:
    """Merge ``other`` into ``survivor`` (see the module docstring)."""
    if survivor == other:
        raise DecisionProblem("pseudonym and other_pseudonym are the same child")
    for name, p in (("pseudonym", survivor), ("other_pseudonym", other)):
        if p not in index.records:
            raise DecisionProblem(f"{name} is not a child the identity index knows")
    nested = index.merged.pop(other, {})
    anchor = index.anchors.get(other)
    records = index.remove(other)
    index.shares.pop(other, None)
    nested_records = [f for rs, _ in nested.values() for f in rs]
    own = _without(records, nested_records)
    for f in records:
        index.add(survivor, f)
    into = index.merged.setdefault(survivor, {})
    into[other] = (own, anchor)
    into.update(nested)
    index.shares.setdefault(survivor, [])
    return Applied(rewrite=(survivor,), tombstone=(other,))


def unlink(index: Index, survivor: str, other: str) -> Applied:
    """Split ``other`` out of ``survivor`` again (see the module docstring)."""
    merged = index.merged.get(survivor, {})
    if other not in merged:
        raise DecisionProblem("other_pseudonym was not linked into pseudonym")
    records, anchor = merged.pop(other)
    shares = tuple(index.shares.get(survivor, ()))
    kept_anchor = index.anchors.get(survivor)
    kept = _without(index.remove(survivor), records)
    for f in kept:
        index.add(survivor, f)
    if kept_anchor is not None:
        index.anchors[survivor] = kept_anchor
    for f in records:
        index.add(other, f)
    if anchor is not None:
        index.anchors[other] = anchor
    if not merged:
        index.merged.pop(survivor, None)
        index.shares.pop(survivor, None)
    return Applied(rewrite=(survivor, other), shares=shares)


def note_shares(index: Index, pseudonym: str, event_id: str, recipients: list[str]) -> bool:
    """Remember shares made under a linked child (True if ``pseudonym`` is one)."""
    if pseudonym not in index.merged:
        return False
    index.shares.setdefault(pseudonym, []).extend(f"{event_id} {r}" for r in recipients)
    return True


def _without(records: list[Features], gone: list[Features]) -> list[Features]:
    drop = list(gone)
    out = []
    for f in records:
        if f in drop:
            drop.remove(f)
        else:
            out.append(f)
    return out
