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
  unlink can say. All of it is taken back by :meth:`rollback` as well.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from broker.identity import decisions
from broker.identity.exceptions import IdentityError
from broker.identity.linkage import NEW, REVIEW, Features, Index, Model, Thresholds
from broker.identity.pseudonym import PartnershipKeys
from broker.identity.resolver import Placed, Resolution, Resolver
from broker.identity.store import IndexSealer, entry

IndexRecord = tuple[bytes, bytes | None]

log = logging.getLogger(__name__)


class SubjectIdentity:
    """Resolution, undo per transaction and learning from the identity topic."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.index: Index = resolver.index
        self.sealer: IndexSealer = resolver.sealer
        # Per open transaction: what takes each change back, in order.
        self._undo: list[Callable[[], None]] = []
        self.reviews = 0

    @classmethod
    def from_keys_dir(
        cls, directory: Path, thresholds: Thresholds, *, create: bool = False
    ) -> SubjectIdentity:
        """The router's identity from its partnership keys (IdentityError if none)."""
        keys = PartnershipKeys.load(directory, create=create)
        return cls(Resolver(keys=keys, index=Index(Model.default(), thresholds)))

    def resolve(self, subject: Mapping[str, Any], placed: Placed | None = None) -> Resolution:
        """The pseudonym for ``subject`` (placed by :meth:`certain`, or now); the
        index now holds the event's record."""
        r = self.resolver.resolve(subject, placed)
        if r.decision in (NEW, REVIEW):
            self._undo.append(functools.partial(self._take_back, r.pseudonym, None))
        elif r.added:
            self._undo.append(functools.partial(self._take_back, r.pseudonym, r.features))
        if r.decision == REVIEW:
            self.reviews += 1
        return r

    def certain(self, subject: Mapping[str, Any]) -> tuple[str | None, Placed]:
        """The pseudonym of the child ``subject`` is for certain
        (:meth:`Resolver.certain`), or None; and where it was placed, for
        :meth:`resolve`. Nothing is added to the index."""
        placed = self.resolver.place(subject)
        return self.resolver.certain(placed), placed

    def begin(self) -> None:
        self._undo.clear()

    def rollback(self) -> None:
        """Take back every change made since :meth:`begin`."""
        for undo in reversed(self._undo):
            undo()
        self._undo.clear()

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
             list(ix.shares[p]) if p in ix.shares else None)
            for p in pseudonyms
        ]  # fmt: skip

        def restore() -> None:
            for p, records, anchor, merged, shares in saved:
                ix.remove(p)
                for f in records:
                    ix.add(p, f)
                _put(ix.anchors, p, anchor)
                _put(ix.merged, p, merged)
                _put(ix.shares, p, shares)

        self._undo.append(restore)

    def link(self, survivor: str, other: str) -> list[IndexRecord]:
        """Apply a LINK; the identity-topic records to write (DecisionProblem if not)."""
        return self._records(self._apply(decisions.link, survivor, other))

    def unlink(self, survivor: str, other: str) -> tuple[list[IndexRecord], tuple[str, ...]]:
        """Apply an UNLINK; the records to write and the shares made under the merged child."""
        applied = self._apply(decisions.unlink, survivor, other)
        return self._records(applied), applied.shares

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
        self, pseudonym: str, event_id: str, recipients: list[str]
    ) -> IndexRecord | None:
        """After an event is shared under ``pseudonym``: if it is a linked child, the
        entry to write (it now lists these shares), else None."""
        if pseudonym not in self.index.merged or not recipients:
            return None
        self._snapshot(pseudonym)
        decisions.note_shares(self.index, pseudonym, event_id, recipients)
        return entry(self.sealer, self.index, pseudonym)

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

    def learn(self, key: bytes | None, value: bytes | None) -> bool:
        """Fold one committed identity-topic record into the index; False if unusable."""
        if key is None:
            return False
        pseudonym = key.decode("utf-8", "replace")
        ix = self.index
        if value is None:
            ix.remove(pseudonym)
            ix.merged.pop(pseudonym, None)
            ix.shares.pop(pseudonym, None)
            return True
        try:
            e = self.sealer.open_full(pseudonym, value)
        except (IdentityError, ValueError, KeyError, TypeError) as exc:
            # Fail loudly: linking against a partial index starts duplicate children.
            log.error("identity index record does not open (%s); the index lacks it", exc)
            return False
        if e.replace:
            ix.remove(pseudonym)
        e.add_to(ix, pseudonym)
        if e.anchor is not None:
            ix.anchors[pseudonym] = e.anchor
        _put(ix.merged, pseudonym, e.merged or None)
        _put(ix.shares, pseudonym, e.shares if e.merged else None)
        return True


def _put(d: dict[str, Any], key: str, value: Any) -> None:
    """``d[key] = value``, or no ``key`` at all for None."""
    if value is None:
        d.pop(key, None)
    else:
        d[key] = value
