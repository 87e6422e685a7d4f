"""The router's side of the loop: what a share starts, as records for its
transaction.

The router calls :meth:`ClockStarter.starts` for each share it makes; the
records it returns go out in the same Kafka transaction as the feed copy:

- the statutory clocks the share starts (to the clock-starts topic), so a clock
  exists exactly when its share does;
- an access notice (as NHS CP-IS does): when an event about a child on a child
  protection plan or looked after is shared, children's social care of the
  child's local authority is told who received it, and when.

Nothing here holds personal data: the subject is the audit HMAC, the rest are
ids and times.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker.codec import Codec
from broker.loop.core import CLOCK_RECORD, NOTICE
from broker.loop.rules import ClockPolicy, Share, clocks_for_share
from broker.topics import Topics

#: Social care statuses whose children's local authority is told of every share.
ACCESS_NOTIFIED = frozenset({"CHILD_PROTECTION_PLAN", "LOOKED_AFTER"})


class ClockStarter:
    """Turns one share into clock-start records (topic, key, value)."""

    def __init__(self, *, policy: Any, codec: Codec, topics: Topics) -> None:
        self._clocks: ClockPolicy = policy.clocks
        self._codec = codec
        self._topic = topics.clock_starts
        self._subscribers = {
            s.id: (frozenset(s.roles), tuple(s.escalate_to)) for s in policy.subscribers
        }
        self._notices = topics.notices
        # Children's social care of each local authority: told of access (CP-IS).
        self._social_care: dict[str, tuple[str, ...]] = {}
        for s in policy.subscribers:
            if "childrens_social_care" in s.roles:
                for la in s.local_authorities:
                    self._social_care[la] = (*self._social_care.get(la, ()), s.id)

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
            data = self._codec.encode(record, CLOCK_RECORD)
            out.append((self._topic, state.event_id.encode(), data))
        if event["subject"].get("social_care_status") in ACCESS_NOTIFIED:
            out += self._access(event, decision.subscriber, subject, now_ms)
        return out

    def _access(
        self, event: Mapping[str, Any], recipient: str, subject: str, now_ms: int
    ) -> list[tuple[str, bytes, bytes]]:
        out = []
        for csc in self._social_care.get(event["subject"]["local_authority"], ()):
            if csc == recipient:
                continue  # social care is not told it received what it received
            notice = {
                "notice_id": f"access:{event['event_id']}:{recipient}:{csc}",
                "kind": "ACCESS", "recipient": csc, "event_id": event["event_id"],
                "subject": subject, "about": recipient, "clock_kind": None, "due_at": None,
                "overdue_by_ms": None, "tier": None, "ack_kind": None, "rag": None,
                "outcome": None, "noticed_at": now_ms,
            }
            out.append((self._notices(csc), event["event_id"].encode(),
                        self._codec.encode(notice, NOTICE)))
        return out


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return int(round(value.timestamp() * 1000))
