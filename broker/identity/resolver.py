"""Which child an event is about: the router's one call into broker/identity.

:meth:`Resolver.resolve` takes an event's ``subject`` and returns the
partnership pseudonym to route it under, how it was found, and the identity
index record to write in the same transaction as the event's shares:

- a known NHS number or UPN: the child it belongs to;
- else the linkage model (:mod:`broker.identity.linkage`): LINK to a known
  child; NEW child; or REVIEW: a provisional pseudonym of its own and the
  candidate a person in the MASH should confirm or reject;
- a new child's pseudonym is derived from its NHS number when the event gives
  one (HMAC, :mod:`broker.identity.pseudonym`), else from a random anchor.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from broker.identity.linkage import LINK, NEW, REVIEW, Features, Index, Match
from broker.identity.pseudonym import PartnershipKeys
from broker.identity.store import IndexSealer, entry

#: A subject's features and their match against the index (:meth:`Resolver.place`).
Placed = tuple[Features, Match]


@dataclass(frozen=True)
class Resolution:
    """The pseudonym an event is routed under and how it was found."""

    pseudonym: str
    decision: str  # LINK, NEW or REVIEW
    probability: float
    #: For REVIEW: the known child a person should consider (None otherwise).
    candidate: str | None
    #: The identity topic record (key, sealed value) to write with the event's shares.
    index_record: tuple[bytes, bytes | None]
    #: The event's features, and whether they were new to the child (for an undo).
    features: Features | None = None
    added: bool = False
    #: For a new child: what its first entry says of where it came from (store.py).
    origin: Mapping[str, str | None] | None = None


class Resolver:
    """Resolves subjects against one identity index, adding each event's record to it."""

    def __init__(
        self,
        *,
        keys: PartnershipKeys,
        index: Index,
        sealer: IndexSealer | None = None,
        new_anchor: Callable[[], str] = lambda: str(uuid.uuid4()),
    ) -> None:
        self.keys = keys
        self.index = index
        self.sealer = sealer or IndexSealer(keys)
        self._new_anchor = new_anchor

    def place(self, subject: Mapping[str, Any]) -> Placed:
        """The subject's features and how they match the index (nothing is added)."""
        f = Features.of_subject(subject)
        return f, self.index.match(f)

    def certain(self, placed: Placed) -> str | None:
        """The child a placed record is for certain: a known child it links to
        automatically, else the child of its NHS number (the pseudonym
        :meth:`resolve` gives it); None if only a new child or a review would do."""
        f, m = placed
        if m.decision == LINK and m.pseudonym is not None:
            return m.pseudonym
        return self.keys.pseudonym("nhs", f.nhs) if f.nhs else None

    def resolve(
        self, subject: Mapping[str, Any], placed: Placed | None = None,
        origin: Mapping[str, str] | None = None,
    ) -> Resolution:
        """The pseudonym for ``subject`` (placed already, or now); its record joins the index.
        ``origin`` (event id, agency, local authority) goes into a new child's entry
        with the candidate of its review, for the other router instances."""
        f, m = placed or self.place(subject)
        if m.decision == LINK and m.pseudonym is not None:
            pseudonym, candidate = m.pseudonym, None
        else:
            pseudonym = self._new_child(f)
            candidate = m.pseudonym if m.decision == REVIEW else None
        added = self.index.add(pseudonym, f, m.probability if m.decision == LINK else 1.0)
        decision = m.decision if m.decision in (LINK, REVIEW) else NEW
        first = ({**origin, "reviewed": candidate}
                 if origin is not None and decision != LINK else None)
        return Resolution(
            pseudonym=pseudonym,
            decision=decision,
            probability=m.probability,
            candidate=candidate,
            index_record=entry(self.sealer, self.index, pseudonym, origin=first),
            features=f,
            added=added,
            origin=first,
        )

    def _new_child(self, f: Features) -> str:
        anchor = ("nhs", f.nhs) if f.nhs else ("child", self._new_anchor())
        pseudonym = self.keys.pseudonym(*anchor)
        self.index.anchors[pseudonym] = anchor
        return pseudonym

    def rotation_map(self) -> dict[str, str]:
        """Every pseudonym made under an older key -> the current one (after a rotation)."""
        return self.keys.rotation_map(self.index.anchors.values())

    def rekey(self) -> tuple[dict[str, str], list[tuple[bytes, bytes | None]]]:
        """After a key rotation: move every child to its current pseudonym.

        Returns the mapping old -> new (for subscribers holding old ones) and
        the identity topic records to write: each child's entry under its new
        pseudonym (sealed under the new key) and a tombstone for the old one.
        """
        mapping = {
            old: new for old, new in self.rotation_map().items() if old in self.index.records
        }
        out: list[tuple[bytes, bytes | None]] = []
        for old, new in mapping.items():
            anchor = self.index.anchors[old]
            unsure = set(self.index.tentative_of(old))
            records = self.index.remove(old)
            for i, f in enumerate(records):
                self.index.add(new, f, 0.0 if i in unsure else 1.0)
            self.index.anchors[new] = anchor
            out.append(entry(self.sealer, self.index, new))
            out.append((old.encode(), None))
        return mapping, out
