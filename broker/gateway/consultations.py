"""The record of who read what through the gateway (DPA 2018 s.62 logging).

Every read of feed records through the gateway is a consultation: who (the
authenticated principal), when, which records (event ids and Kafka
coordinates, never their content) and the stated purpose (one of the
subscriber's purposes in the policy, so no free text). Refused calls (403) are
recorded too, and so is every event the gateway signed for an agency that
delegates signing to it (``signed_for``). Each record is one JSON object (keys sorted) on
``<ns>.gateway.consultations``, keyed by subscriber, written and acknowledged
(``acks=all``) *before* the records are handed over: if it cannot be written
the read fails (503) rather than go unrecorded.

Why a topic and not an audit leaf: audit leaves are written by the router
inside its exactly-once transaction (broker/audit/leaf_template.py), and a
second writer of the audit partition would break the log's single-writer
order; the checkpointer can later fold this topic into the signed log.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from broker.clock import Clock, SystemClock
from broker.kafka.producer import Producer
from broker.topics import Topics


@dataclass(frozen=True)
class Consulted:
    """One record handed to a reader: its event id and where it lies."""

    event_id: str
    topic: str
    partition: int
    offset: int


class Recorder:
    """Writes consultation and refusal records; one per gateway process."""

    def __init__(self, producer: Producer, topics: Topics, clock: Clock | None = None) -> None:
        self._producer = producer
        self.topic = topics.consultations
        self._clock = clock or SystemClock()

    def _write(self, key: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        self._producer.send(self.topic, data, key=key.encode()).get()

    def consultation(
        self, who: str, subscriber: str, purpose: str, records: Sequence[Consulted], via: str
    ) -> None:
        """Record that ``who`` was shown ``records`` of ``subscriber``'s feed."""
        if not records:
            return
        self._write(subscriber, {
            "kind": "consultation",
            "by": who,
            "subscriber": subscriber,
            "at_ms": self._clock.now_ms(),
            "purpose": purpose,
            "via": via,
            "records": [
                {"event_id": r.event_id, "topic": r.topic, "partition": r.partition,
                 "offset": r.offset}
                for r in records
            ],
        })

    def signed_for(self, agency: str, event_id: str, digest: str, where: str) -> None:
        """Record that the gateway signed an event for ``agency`` (``signing: gateway``)."""
        self._write(f"agency:{agency}", {
            "kind": "signed_for",
            "by": "gateway",
            "agency": agency,
            "event_id": event_id,
            "digest": digest,
            "where": where,
            "at_ms": self._clock.now_ms(),
        })

    def refusal(self, who: object, action: str, claimed: str) -> None:
        """Record a refused call: who tried to act as whom (ids only)."""
        self._write(str(claimed), {
            "kind": "refusal",
            "by": str(who),
            "claimed": claimed,
            "action": action,
            "at_ms": self._clock.now_ms(),
        })
