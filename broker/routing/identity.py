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
  index exactly as the topic holds it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker.identity.exceptions import IdentityError
from broker.identity.linkage import NEW, REVIEW, Features, Index, Model, Thresholds
from broker.identity.pseudonym import PartnershipKeys
from broker.identity.resolver import Resolution, Resolver
from broker.identity.store import IndexSealer

log = logging.getLogger(__name__)


class SubjectIdentity:
    """Resolution, undo per transaction and learning from the identity topic."""

    def __init__(self, resolver: Resolver) -> None:
        self.resolver = resolver
        self.index: Index = resolver.index
        self.sealer: IndexSealer = resolver.sealer
        # Per open transaction: (pseudonym, features added or None: a new child).
        self._undo: list[tuple[str, Features | None]] = []
        self.reviews = 0

    @classmethod
    def from_keys_dir(
        cls, directory: Path, thresholds: Thresholds, *, create: bool = False
    ) -> SubjectIdentity:
        """The router's identity from its partnership keys (IdentityError if none)."""
        keys = PartnershipKeys.load(directory, create=create)
        return cls(Resolver(keys=keys, index=Index(Model.default(), thresholds)))

    def resolve(self, subject: Mapping[str, Any]) -> Resolution:
        """The pseudonym for ``subject``; the index now holds the event's record."""
        r = self.resolver.resolve(subject)
        if r.decision in (NEW, REVIEW):
            self._undo.append((r.pseudonym, None))
        elif r.added:
            self._undo.append((r.pseudonym, r.features))
        if r.decision == REVIEW:
            self.reviews += 1
        return r

    def begin(self) -> None:
        self._undo.clear()

    def rollback(self) -> None:
        """Take back every record :meth:`resolve` added since :meth:`begin`."""
        for pseudonym, f in reversed(self._undo):
            anchor = self.index.anchors.get(pseudonym)
            records = self.index.remove(pseudonym)
            if f is None:
                continue
            for kept in records:
                if kept != f:
                    self.index.add(pseudonym, kept)
            if anchor is not None:
                self.index.anchors[pseudonym] = anchor
        self._undo.clear()

    def learn(self, key: bytes | None, value: bytes | None) -> bool:
        """Fold one committed identity-topic record into the index; False if unusable."""
        if key is None:
            return False
        pseudonym = key.decode("utf-8", "replace")
        if value is None:
            self.index.remove(pseudonym)
            return True
        try:
            records, anchor = self.sealer.open_entry(pseudonym, value)
        except (IdentityError, ValueError, KeyError, TypeError) as exc:
            # Fail loudly: linking against a partial index starts duplicate children.
            log.error("identity index record does not open (%s); the index lacks it", exc)
            return False
        for f in records:
            self.index.add(pseudonym, f)
        if anchor is not None:
            self.index.anchors[pseudonym] = anchor
        return True
