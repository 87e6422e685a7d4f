"""The router's identity seam: which child an event without a pseudonym is about.

:class:`SubjectIdentity` wraps a :class:`~broker.identity.resolver.Resolver`
for the routing core:

- :meth:`resolve` derives the partnership pseudonym (HMAC of the NHS number,
  else record linkage against the identity index) and notes what it added, so
  that :meth:`rollback` takes it back when the routing transaction aborts (the
  index record written in that transaction never happened either);
- :meth:`learn` folds an identity-topic record (this or another instance's,
  read back committed) into the index: its records are added to the child's
  (idempotent, so reading one's own records back changes nothing), a
  tombstone forgets the child. Read from the beginning when the router starts
  or its partitions move (broker/routing/followers.py), this rebuilds the
  index exactly as the topic holds it. An entry a link or unlink wrote
  replaces the child's records (broker/identity/store.py);
- :meth:`link`, :meth:`unlink` apply a person's decision
  (broker/identity/decisions.py) and give the identity-topic records to write;
  :meth:`note_shares` remembers what was shared under a linked child, so an
  unlink can say, and which subscribers hold records under each child the
  index knows, so a link or unlink is announced to them
  (broker/routing/identity_notices.py). All of it is taken back by
  :meth:`rollback` as well;
- :meth:`learn` of a new child another instance wrote (while following, not
  while rebuilding) scores it against the children this instance knows: two
  instances may each have named one child at the same moment, neither
  knowing the other's. A pair at or above the policy's lower threshold is a
  :class:`Pair` for review (never linked automatically; a person decides), which
  :meth:`take_pairs` hands to the router's next transaction
  (broker/routing/identity_decisions.py: ``pair_reviews``).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from broker.identity import decisions
from broker.identity.exceptions import IdentityError
from broker.identity.linkage import LINK, NEW, REVIEW, Features, Index, Model, Thresholds
from broker.identity.pseudonym import PartnershipKeys
from broker.identity.resolver import Placed, Resolution, Resolver
from broker.identity.store import Entry, IndexSealer, entry

IndexRecord = tuple[bytes, bytes | None]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pair:
    """Two children that may be one, met when one instance learned the other's:
    ``candidate`` stays if a person links them (the one named by NHS number if
    only one is), ``provisional`` the other; where the learned child came from."""

    candidate: str
    provisional: str
    probability: float
    event_id: str
    agency: str
    local_authority: str

    @property
    def children(self) -> tuple[str, str]:
        """The two pseudonyms in a fixed order: what the review id is derived from."""
        a, b = sorted((self.candidate, self.provisional))
        return a, b


class SubjectIdentity:
    """Resolution, undo per transaction and learning from the identity topic."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.index: Index = resolver.index
        self.sealer: IndexSealer = resolver.sealer
        # Per open transaction: what takes each change back, in order.
        self._undo: list[Callable[[], None]] = []
        self.reviews = 0
        # Pairs met while learning, for the next transaction; and the pairs this
        # instance raised (so a pair is raised once, whichever child is learned).
        self._pairs: dict[tuple[str, str], Pair] = {}
        self._raised: set[tuple[str, str]] = set()
        # New children of the open transaction: their origin, kept in every entry
        # the transaction writes for them (the last one is the one others read).
        self._origins: dict[str, Mapping[str, str | None]] = {}

    @classmethod
    def from_keys_dir(
        cls, directory: Path, thresholds: Thresholds, *, create: bool = False
    ) -> SubjectIdentity:
        """The router's identity from its partnership keys (IdentityError if none)."""
        keys = PartnershipKeys.load(directory, create=create)
        return cls(Resolver(keys=keys, index=Index(Model.default(), thresholds)))

    def resolve(
        self, subject: Mapping[str, Any], placed: Placed | None = None,
        origin: Mapping[str, str] | None = None,
    ) -> Resolution:
        """The pseudonym for ``subject`` (placed by :meth:`certain`, or now); the
        index now holds the event's record (``origin``: the event's id, agency and
        local authority, kept in a new child's entry for the other instances)."""
        r = self.resolver.resolve(subject, placed, origin)
        if r.decision in (NEW, REVIEW):
            self._undo.append(functools.partial(self._take_back, r.pseudonym, None))
        elif r.added:
            self._undo.append(functools.partial(self._take_back, r.pseudonym, r.features))
        if r.decision == REVIEW:
            self.reviews += 1
        if r.origin is not None:
            self._origins[r.pseudonym] = r.origin
        return r

    def certain(self, subject: Mapping[str, Any]) -> tuple[str | None, Placed]:
        """The pseudonym of the child ``subject`` is for certain
        (:meth:`Resolver.certain`), or None; and where it was placed, for
        :meth:`resolve`. Nothing is added to the index."""
        placed = self.resolver.place(subject)
        return self.resolver.certain(placed), placed

    def begin(self) -> None:
        self._undo.clear()
        self._origins.clear()

    def rollback(self) -> None:
        """Take back every change made since :meth:`begin`."""
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

    def undo_last(self) -> None:
        """Take back the last change (a decision applied whose notices failed)."""
        if self._undo:
            self._undo.pop()()

    def _take_back(self, pseudonym: str, f: Features | None) -> None:
        """Undo one :meth:`resolve`: a new child goes, a known one loses ``f``."""
        anchor = self.index.anchors.get(pseudonym)
        records = self.index.remove(pseudonym)
        if f is None:
            return
        for kept in records:
            if kept != f:
                self.index.add(pseudonym, kept)
        if anchor is not None:
            self.index.anchors[pseudonym] = anchor

    def _snapshot(self, *pseudonyms: str) -> None:
        """Note how these children stand now, for :meth:`rollback`."""
        ix = self.index
        saved = [
            (p, list(ix.records.get(p, ())), ix.anchors.get(p),
             dict(ix.merged[p]) if p in ix.merged else None,
             list(ix.shares[p]) if p in ix.shares else None,
             dict(ix.recipients[p]) if p in ix.recipients else None,
             dict(ix.told[p]) if p in ix.told else None)
            for p in pseudonyms
        ]  # fmt: skip

        def restore() -> None:
            for p, records, anchor, merged, shares, recipients, told in saved:
                ix.remove(p)
                for f in records:
                    ix.add(p, f)
                _put(ix.anchors, p, anchor)
                _put(ix.merged, p, merged)
                _put(ix.shares, p, shares)
                _put(ix.recipients, p, recipients)
                _put(ix.told, p, told)

        self._undo.append(restore)

    def link(self, survivor: str, other: str) -> tuple[list[IndexRecord], dict[str, bool]]:
        """Apply a LINK; the identity-topic records to write (DecisionProblem if not)
        and who is to be told: the subscribers that hold records under ``other``
        (subscriber -> whether its copies showed the pseudonym)."""
        applied = self._apply(decisions.link, survivor, other)
        ix = self.index
        told = ix.recipients.pop(other, {})
        nested = ix.told.pop(other, {})
        into = ix.told.setdefault(survivor, {})
        into.update(nested)
        into[other] = dict(told)
        # They hold the merged child now: a later link of the survivor concerns them.
        held = ix.recipients.setdefault(survivor, {})
        for subscriber, shown in told.items():
            held[subscriber] = held.get(subscriber, False) or shown
        return self._records(applied), told

    def unlink(
        self, survivor: str, other: str
    ) -> tuple[list[IndexRecord], tuple[str, ...], dict[str, bool]]:
        """Apply an UNLINK; the records to write, the shares made under the merged
        child, and who is to be told: those told of the link and those that
        received records under the merged child since (subscriber -> shown)."""
        ix = self.index
        held = dict(ix.recipients.get(survivor, {}))
        applied = self._apply(decisions.unlink, survivor, other)
        told = dict(ix.told.get(survivor, {}).pop(other, {}))
        if not ix.told.get(survivor):
            ix.told.pop(survivor, None)
        for share in applied.shares:
            subscriber = share.partition(" ")[2]
            told[subscriber] = told.get(subscriber, False) or held.get(subscriber, False)
        # What they hold may be the split child's: a later link of it concerns them.
        ix.recipients[other] = dict(told)
        return self._records(applied), applied.shares, told

    def _apply(
        self, decide: Callable[[Index, str, str], decisions.Applied], survivor: str, other: str
    ) -> decisions.Applied:
        """``decide`` on the index, undoable; a refused decision leaves nothing to undo."""
        self._snapshot(survivor, other)
        try:
            return decide(self.index, survivor, other)
        except decisions.DecisionProblem:
            self._undo.pop()()
            raise

    def _records(self, applied: decisions.Applied) -> list[IndexRecord]:
        out = [entry(self.sealer, self.index, p, replace=True) for p in applied.rewrite]
        return out + [(p.encode(), None) for p in applied.tombstone]

    def note_shares(
        self, pseudonym: str, event_id: str, shown: Mapping[str, bool]
    ) -> IndexRecord | None:
        """After an event is shared under ``pseudonym`` (``shown``: each recipient,
        and whether its copy showed the pseudonym): the child's entry to write if
        the index knows the child and this changed it (a linked child lists every
        share; any child lists each subscriber holding records under it), else None."""
        ix = self.index
        if not shown or pseudonym not in ix.records:
            return None
        held = ix.recipients.get(pseudonym, {})
        new = {s: v for s, v in shown.items() if s not in held or (v and not held[s])}
        linked = pseudonym in ix.merged
        if not new and not linked:
            return None
        self._snapshot(pseudonym)
        if new:
            ix.recipients.setdefault(pseudonym, {}).update(new)
        if linked:
            decisions.note_shares(ix, pseudonym, event_id, list(shown))
        return entry(self.sealer, ix, pseudonym, origin=self._origins.get(pseudonym))

    def linked_with(self, pseudonym: str) -> Iterable[str]:
        """The pseudonyms a person linked into ``pseudonym`` (empty for most children)."""
        return self.index.merged.get(pseudonym, ())

    def survivor_of(self, pseudonym: str) -> str | None:
        """The child a person linked ``pseudonym`` into, for an event that still
        carries it (None: not linked away). Links are few; looked up only while
        some exist, for a pseudonym the index no longer holds."""
        merged = self.index.merged
        if not merged or pseudonym in self.index.records:
            return None
        return next((s for s, others in merged.items() if pseudonym in others), None)

    def knows(self, pseudonym: str) -> bool:
        return pseudonym in self.index.records

    def learn(self, key: bytes | None, value: bytes | None, *, live: bool = False) -> bool:
        """Fold one committed identity-topic record into the index; False if unusable.

        ``live``: following the topic, not rebuilding the index from it: a new
        child another instance wrote is first scored against the children this
        one knows (:meth:`_meet`)."""
        if key is None:
            return False
        pseudonym = key.decode("utf-8", "replace")
        ix = self.index
        if value is None:
            ix.remove(pseudonym)
            ix.merged.pop(pseudonym, None)
            ix.shares.pop(pseudonym, None)
            ix.recipients.pop(pseudonym, None)
            ix.told.pop(pseudonym, None)
            return True
        try:
            e = self.sealer.open_full(pseudonym, value)
        except (IdentityError, ValueError, KeyError, TypeError) as exc:
            # Fail loudly: linking against a partial index starts duplicate children.
            log.error("identity index record does not open (%s); the index lacks it", exc)
            return False
        if e.replace:
            ix.remove(pseudonym)
        elif live and e.origin and pseudonym not in ix.records:
            self._meet(pseudonym, e)
        e.add_to(ix, pseudonym)
        if e.anchor is not None:
            ix.anchors[pseudonym] = e.anchor
        _put(ix.merged, pseudonym, e.merged or None)
        _put(ix.shares, pseudonym, e.shares if e.merged else None)
        # Entries hold the whole state; one not written by a decision only adds.
        held = {} if e.replace else dict(ix.recipients.get(pseudonym, {}))
        for subscriber, shown in e.recipients.items():
            held[subscriber] = held.get(subscriber, False) or shown
        _put(ix.recipients, pseudonym, held or None)
        _put(ix.told, pseudonym, e.told or None)
        return True

    def _meet(self, pseudonym: str, e: Entry) -> None:
        """Score a new child another instance named against this instance's children
        (before it joins the index); the best one at or above the lower threshold,
        but not the one its writer already raised a review with, makes a :class:`Pair`."""
        reviewed = e.origin.get("reviewed")
        best: tuple[float, str] | None = None
        for f in e.records:
            m = self.index.match(f)
            if m.decision not in (LINK, REVIEW) or m.pseudonym in (None, pseudonym, reviewed):
                continue
            if best is None or m.probability > best[0]:
                best = (m.probability, str(m.pseudonym))
        if best is None:
            return
        p, known = best
        by_nhs = (e.anchor or ("", ""))[0] == "nhs"
        known_by_nhs = self.index.anchors.get(known, ("", ""))[0] == "nhs"
        candidate, provisional = (pseudonym, known) if by_nhs and not known_by_nhs else (
            known, pseudonym)
        pair = Pair(candidate, provisional, p, e.origin.get("event_id") or "",
                    e.origin.get("agency") or "", e.origin.get("local_authority") or "")
        if pair.children not in self._raised:
            self._pairs.setdefault(pair.children, pair)

    def pairs_pending(self) -> bool:
        return bool(self._pairs)

    def take_pairs(self) -> list[Pair]:
        """The pairs met since the last transaction whose children are both still
        known apart (a link may have joined them meanwhile); given back by
        :meth:`rollback` if the transaction aborts."""
        taken = list(self._pairs.values())
        self._pairs.clear()
        out = [p for p in taken if self.knows(p.candidate) and self.knows(p.provisional)]
        self._raised.update(p.children for p in out)

        def give_back() -> None:
            self._raised.difference_update(p.children for p in out)
            for p in taken:
                self._pairs.setdefault(p.children, p)

        self._undo.append(give_back)
        return out


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    """``d[key] = value``, or no ``key`` at all for None."""
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value
