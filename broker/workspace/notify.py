"""Telling an agency that a team consulted a concern it published, where the
policy says so (an agency's ``notify_on_consultation`` data classes).

For each consulted copy whose shared data classes meet its source agency's
list, one ``CONSULTED`` :data:`broker.loop.core.NOTICE` goes to that agency's
status topic (``<ns>.status.<agency>``, where it already hears what became of
its concerns): which event, which team (never which person), for what purpose.
Each notice written is then audited (through the gateway's consultation
recorder, which writes the workspace's CONSULTED leaves) as a ``NOTIFIED`` leaf (outcome
``CONSULTED``, reason ``CONSULTED by <team>``, the notice's SHA-256 as
``delivered_digest``; the workspace holds no original event bytes, so the
notice's digest stands as ``event_digest`` too) on the audit topic.
Every write is acknowledged before the page is shown; if one fails the caller
shows nothing (fail closed, as for the consultation record itself).
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from broker.audit.leaf import AuditLeaf, LeafKind
from broker.clock import Clock, SystemClock
from broker.codec import Codec
from broker.kafka.producer import Producer
from broker.loop.core import NOTICE
from broker.policy import Policy
from broker.topics import Topics


@dataclass(frozen=True)
class Read:
    """A copy shown to a team: its event, the agency that published it, the
    data classes its copy shares."""

    event_id: str
    source_agency: str
    classes_shared: Sequence[str]


class OwnerNotifier:
    """Writes CONSULTED notices and their NOTIFIED leaves; one per workspace."""

    def __init__(self, producer: Producer, topics: Topics, codec: Codec, policy: Policy | None,
                 clock: Clock | None = None) -> None:
        self._producer = producer
        self._topics = topics
        self._codec = codec
        self._policy = policy
        self._clock = clock or SystemClock()

    def owners_to_tell(self, reads: Sequence[Read]) -> list[Read]:
        """The reads whose source agency's policy asks to be told (one per event)."""
        if self._policy is None:
            return []
        out: dict[str, Read] = {}
        for r in reads:
            agency = self._policy.agency(r.source_agency)
            if agency is not None and agency.notified_of(r.classes_shared):
                out.setdefault(r.event_id, r)
        return list(out.values())

    def consulted(self, subscriber: str, purpose: str, reads: Sequence[Read],
                  audit: Callable[[Sequence[AuditLeaf]], None]) -> int:
        """Notify, then audit the notices with ``audit`` (the gateway's
        :meth:`broker.gateway.consultations.Recorder.audit`, the one writer of
        workspace leaves); the number of notices written. Raises if a write fails."""
        told = self.owners_to_tell(reads)
        if not told:
            return 0
        now = self._clock.now_ms()
        consultation = uuid.uuid4().hex
        sent = []
        for r in told:
            notice = {
                "notice_id": f"consulted:{r.event_id}:{subscriber}:{consultation}",
                "kind": "CONSULTED", "recipient": r.source_agency, "event_id": r.event_id,
                "subject": "", "about": subscriber, "clock_kind": None, "due_at": None,
                "overdue_by_ms": None, "tier": None, "ack_kind": None, "rag": None,
                "outcome": None, "purpose": purpose, "noticed_at": now,
            }
            data = self._codec.encode(notice, NOTICE)
            sent.append((r, data, self._producer.send(self._topics.status(r.source_agency), data,
                                                      key=r.event_id.encode())))
        for _, _, future in sent:
            future.get()
        leaves = [AuditLeaf(
            time_ms=now, kind=LeafKind.NOTIFIED, event_id=r.event_id,
            event_digest=hashlib.sha256(data).hexdigest(), source_agency=r.source_agency,
            recipient=r.source_agency, outcome="CONSULTED", reason=f"CONSULTED by {subscriber}",
            delivered_digest=hashlib.sha256(data).hexdigest(),
        ) for r, data, _ in sent]
        audit(leaves)
        return len(sent)

    @property
    def broken(self) -> bool:
        """The producer will write nothing more after a record the broker refused
        for good (:attr:`broker.kafka.producer.Producer.broken`): make a new notifier."""
        return self._producer.broken

    def close(self) -> None:
        self._producer.close()
