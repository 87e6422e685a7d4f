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

Called for every share, so it keeps what depends only on the policy (which
clocks a subscriber's share of a category starts, and the due dates of the
clocks started in the last millisecond), writes clock records by splicing their
ids and times into bytes kept per (owner, kind, referrer)
(:mod:`broker.loop._clock_bytes`), and writes the rest, built from checked
values, without validating them again (``Codec.encode_trusted``).
``ClockStarter(plain=True)`` is the same without these shortcuts: the rules'
``clocks_for_share`` and the validating ``Codec.encode`` of each record's dict;
tests hold the two byte-for-byte equal.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from broker.codec import Codec
from broker.loop._clock_bytes import ClockBytes, clock_record
from broker.loop.core import CLOCK_RECORD, NOTICE
from broker.loop.rules import (
    BREAK_GLASS_OBLIGATION,
    ClockPolicy,
    Share,
    clocks_for_share,
    kinds_for_share,
)
from broker.topics import Topics

#: Social care statuses whose children's local authority is told of every share.
ACCESS_NOTIFIED = frozenset({"CHILD_PROTECTION_PLAN", "LOOKED_AFTER"})
MISSING_EPISODE = "safeshare.MissingEpisode"
# Distinct (subscriber, category, risk, break-glass, returned) combinations kept.
_KINDS_MAX = 4096

Start = tuple[str, bytes, bytes]
# Of one event, for its shares' clocks: event id, record key, category, risk level,
# referrer, the child's return (ms, a missing episode's), the encoded ids, notified.
_Facts = tuple[str, bytes, str, str, Any, int | None, bytes | None, bool]


class ClockStarter:
    """Turns one share into clock-start records (topic, key, value)."""

    def __init__(self, *, policy: Any, codec: Codec, topics: Topics, plain: bool = False) -> None:
        self._clocks: ClockPolicy = policy.clocks
        self._plain = plain
        self._encode: Callable[[Mapping[str, Any], str], bytes] = (
            codec.encode if plain else codec.encode_trusted
        )
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
        self._kinds: dict[tuple[Any, ...], list[tuple[str, bool]]] = {}
        # Shares come several to a millisecond at full speed: their due dates are kept
        # for the last start time seen (a due date depends on the kind and start only).
        self._dues_at: int | None = None
        self._dues: dict[str, int] = {}
        # The last event asked about (held, so the identity test cannot meet a new
        # object at its address), its subject, and its facts (:meth:`_facts`).
        self._last_event: Any = None
        self._last_subject: str | None = None
        self._last_facts: _Facts | None = None
        #: The clock records' bytes from kept templates (fast path), if they match
        #: the codec's encoding of sample records; else None (the dicts are encoded).
        self.clock_bytes = None if plain else ClockBytes.checked(codec)

    def starts(
        self, event: Mapping[str, Any], decision: Any, subject: str, now_ms: int
    ) -> list[Start]:
        subscriber = decision.subscriber
        roles, escalate_to = self._subscribers.get(subscriber, (frozenset(), ()))
        if self._plain:
            facts = self._facts(event, subject)
        else:  # one event's shares ask in turn: what is the event's, read once
            kept = self._last_facts
            if kept is not None and self._last_event is event and self._last_subject == subject:
                facts = kept
            else:
                facts = self._last_facts = self._facts(event, subject)
                self._last_event, self._last_subject = event, subject
        event_id, key, category, risk, referrer, returned, ids, notified = facts
        if self._plain:
            share = Share(
                event_id=event_id, subject=subject, subscriber=subscriber, roles=roles,
                shared_at_ms=now_ms, category=category, risk_level=risk,
                obligations=frozenset(str(o.code) for o in decision.obligations),
                returned_at_ms=returned, escalate_to=escalate_to,
            )  # fmt: skip
            clocks = [(c.kind, c.started_ms, c.due_ms)
                      for c in clocks_for_share(self._clocks, share)]
        else:
            clocks = self._clocks_of(subscriber, roles, category, risk, decision, returned, now_ms)
        out = []
        if clocks:
            made = self.clock_bytes
            for kind, begin, due in clocks:
                value = None
                if made is not None and ids is not None:
                    value = made.record(
                        subscriber, kind, referrer, escalate_to, key, ids, begin, due
                    )
                if value is None:  # not of the template's shape: the record's dict
                    record = clock_record(
                        kind, event_id, subject, subscriber, referrer, begin, due, escalate_to
                    )
                    value = self._encode(record, CLOCK_RECORD)
                out.append((self._topic, key, value))
        if notified:
            out += self._access(event, subscriber, subject, now_ms)
        return out

    def _facts(self, event: Mapping[str, Any], subject: str) -> _Facts:
        """What the clocks of any share of ``event`` need of it."""
        payload = event.get("payload")
        returned = None
        if isinstance(payload, tuple) and payload[0] == MISSING_EPISODE:
            returned = _ms(payload[1].get("ended_at"))
        event_id = event["event_id"]
        key = event_id.encode()
        made = self.clock_bytes
        ids = made.ids(key, subject) if made is not None and type(event_id) is str else None
        return (
            event_id, key, str(event["category"]), str(event["risk_level"]),
            event["source"]["agency_id"], returned, ids,
            event["subject"].get("social_care_status") in ACCESS_NOTIFIED,
        )  # fmt: skip

    def _clocks_of(
        self, subscriber: str, roles: frozenset[str], category: str, risk: str, decision: Any,
        returned: int | None, now_ms: int,
    ) -> list[tuple[str, int, int]]:  # fmt: skip
        """(kind, start, due) of each clock: the kinds kept per combination."""
        break_glass = any(str(o.code) == BREAK_GLASS_OBLIGATION for o in decision.obligations)
        memo = (subscriber, category, risk, break_glass, returned is not None)
        kinds = self._kinds.get(memo)
        if kinds is None:
            if len(self._kinds) >= _KINDS_MAX:
                self._kinds.clear()
            kinds = self._kinds[memo] = kinds_for_share(
                self._clocks, roles, category, risk,
                break_glass=break_glass, returned=returned is not None,
            )  # fmt: skip
        due_ms = self._clocks.due_ms
        if now_ms != self._dues_at:  # the due dates of clocks started at now_ms, per kind
            self._dues_at, self._dues = now_ms, {}
        dues = self._dues
        out = []
        for kind, from_return in kinds:
            if from_return and returned is not None:
                out.append((kind, returned, due_ms(kind, returned)))
                continue
            due = dues.get(kind)
            if due is None:
                due = dues[kind] = due_ms(kind, now_ms)
            out.append((kind, now_ms, due))
        return out

    def _access(
        self, event: Mapping[str, Any], recipient: str, subject: str, now_ms: int
    ) -> list[Start]:
        out = []
        event_id = event["event_id"]
        for csc in self._social_care.get(event["subject"]["local_authority"], ()):
            if csc == recipient:
                continue  # social care is not told it received what it received
            notice = {
                "notice_id": f"access:{event_id}:{recipient}:{csc}",
                "kind": "ACCESS", "recipient": csc, "event_id": event_id,
                "subject": subject, "about": recipient, "clock_kind": None, "due_at": None,
                "overdue_by_ms": None, "tier": None, "ack_kind": None, "rag": None,
                "outcome": None, "noticed_at": now_ms,
            }
            out.append((self._notices(csc), event_id.encode(), self._encode(notice, NOTICE)))
        return out


def _ms(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, int):
        return value
    return int(round(value.timestamp() * 1000))
