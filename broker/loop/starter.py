"""The router's side of the loop: the clocks a share starts, as records for its
transaction.

The router calls a :class:`ClockStarter` for each share it makes; the records it
returns go to the clock-starts topic in the same Kafka transaction as the
feed copy, so a clock exists exactly when its share does. Nothing here holds
personal data: the subject is the audit HMAC, the rest are ids and times.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.codec import Codec
from broker.loop.core import CLOCK_RECORD
from broker.loop.rules import ClockPolicy, Share, clocks_for_share
from broker.topics import Topics


class ClockStarter:
    """Turns one share into clock-start records (topic, key, value)."""

    def __init__(self, *, policy: Any, codec: Codec, topics: Topics) -> None:
        self._clocks: ClockPolicy = policy.clocks
        self._codec = codec
        self._topic = topics.clock_starts
        self._subscribers = {
            s.id: (frozenset(s.roles), tuple(s.escalate_to)) for s in policy.subscribers
        }

    def starts(
        self, event: Mapping[str, Any], decision: Any, subject: str, now_ms: int
    ) -> list[tuple[str, bytes, bytes]]:
        roles, escalate_to = self._subscribers.get(decision.subscriber, (frozenset(), ()))
        payload = event.get("payload")
        returned = None
        if isinstance(payload, tuple) and payload[0] == "safeshare.MissingEpisode":
            returned = _ms(payload[1].get("ended_at"))
        share = Share(
            event_id=event["event_id"],
            subject=subject,
            subscriber=decision.subscriber,
            roles=roles,
            shared_at_ms=now_ms,
            category=str(event["category"]),
            risk_level=str(event["risk_level"]),
            obligations=frozenset(str(o.code) for o in decision.obligations),
            returned_at_ms=returned,
            escalate_to=escalate_to,
        )
        out = []
        referrer = event["source"]["agency_id"]
        for state in clocks_for_share(self._clocks, share):
            record = {
                "clock_id": state.clock_id, "kind": state.kind, "event_id": state.event_id,
                "subject": subject, "owner": state.owner, "referrer": referrer,
                "started_at": state.started_ms, "due_at": state.due_ms,
                "escalate_to": list(state.escalate_to), "status": "OPEN",
                "tiers_escalated": 0, "stopped_at": None, "stopped_by": None,
            }
            out.append((self._topic, state.event_id.encode(),
                        self._codec.encode(record, CLOCK_RECORD)))
        return out


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return int(round(value.timestamp() * 1000))
