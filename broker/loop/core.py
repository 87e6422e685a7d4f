"""The loop's decisions, without Kafka: what a clock start, an acknowledgement
or a tick of the clock writes.

State is kept per input partition (clock starts and acknowledgements are both
keyed by event id and the topics have the same partition count, so partition
*p* of each belongs to one instance), and every change is written to partition
*p* of the clock changelog in the same transaction as its notices. A restarted
or rebalanced instance rebuilds partition *p* from the changelog alone.

An acknowledgement is taken only from the subscriber that owns the topic it
arrives on, and only stops clocks that subscriber owns: nobody can meet
another team's deadline.
"""

from __future__ import annotations

import hashlib
import logging
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from broker.audit.leaf import AuditLeaf, LeafKind, encode_batch
from broker.clock import Clock
from broker.codec import Codec
from broker.codec.exceptions import CodecError
from broker.loop.clocks import Clocks, ClockState, Escalation, Status
from broker.loop.rules import ClockPolicy, clock_id
from broker.topics import Topics

log = logging.getLogger(__name__)

ACKNOWLEDGEMENT = "safeshare.Acknowledgement"
CLOCK_RECORD = "safeshare.ClockRecord"
NOTICE = "safeshare.Notice"
QUARANTINE_RECORD = "safeshare.QuarantineRecord"

#: Changelog kind prefix of an acknowledgement read before its clock started.
EARLY_ACK = "ACK:"
#: How long such an acknowledgement waits for its clock.
EARLY_ACK_TTL_MS = 7 * 24 * 3_600_000

#: What a referrer may see of a status notice unless the policy says less.
DEFAULT_REFERRER_SEES = frozenset({"rag", "outcome"})


class Source(NamedTuple):
    """Where an input record was read."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Out(NamedTuple):
    """A record to write in the current transaction."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None = None


@dataclass
class _Partition:
    clocks: Clocks
    # (event id, owner) -> referrer, for status notices after a clock closed.
    referrers: dict[tuple[str, str], str] = field(default_factory=dict)
    # (event id, owner) -> [(ack kind, at ms, by)]: acknowledgements read before
    # the start of the clock they meet (see LoopCore.on_ack).
    early: dict[tuple[str, str], list[tuple[str, int, str]]] = field(default_factory=dict)


class LoopCore:
    def __init__(
        self,
        *,
        codec: Codec,
        topics: Topics,
        policy: ClockPolicy,
        clock: Clock,
        referrer_sees: frozenset[str] = DEFAULT_REFERRER_SEES,
    ) -> None:
        self.codec = codec
        self.topics = topics
        self.policy = policy
        self.clock = clock
        self.referrer_sees = referrer_sees
        self._parts: dict[int, _Partition] = {}
        # Audit leaves of the current turn (see take_leaves).
        self._leaves: list[AuditLeaf] = []

    # -- state --------------------------------------------------------------------
    def partitions(self) -> list[int]:
        return sorted(self._parts)

    def reset(self, partition: int) -> None:
        """Forget a partition's state (before a rebuild, or when it moves away)."""
        self._parts.pop(partition, None)

    def _part(self, partition: int) -> _Partition:
        part = self._parts.get(partition)
        if part is None:
            part = self._parts[partition] = _Partition(Clocks(dict(self.policy.rules)))
        return part

    def restore(self, partition: int, value: bytes | None) -> None:
        """Apply one changelog value read back while rebuilding."""
        if value is None:
            return
        state, referrer = state_of(self.codec.decode(value, CLOCK_RECORD))
        part = self._part(partition)
        if state.kind.startswith(EARLY_ACK):
            if self.clock.now_ms() - state.started_ms < EARLY_ACK_TTL_MS:
                part.early.setdefault((state.event_id, state.owner), []).append(
                    (state.kind[len(EARLY_ACK):], state.started_ms, state.stopped_by or ""))
            return
        part.clocks.apply(state)
        if referrer:
            part.referrers[(state.event_id, state.owner)] = referrer

    def open_clocks(self) -> Iterator[ClockState]:
        for part in self._parts.values():
            yield from part.clocks.open_clocks()

    def next_fire_ms(self) -> int | None:
        times = [t for p in self._parts.values() if (t := p.clocks.next_fire_ms()) is not None]
        return min(times) if times else None

    # -- inputs ---------------------------------------------------------------------
    def on_start(self, src: Source, value: bytes | None) -> list[Out]:
        """A clock the router started as it shared an event."""
        try:
            record = self.codec.decode(value or b"", CLOCK_RECORD)
            state, referrer = state_of(record)
        except (CodecError, KeyError, ValueError) as exc:
            return [self._quarantine(src, value, "SCHEMA_INVALID", f"clock start: {exc}")]
        if state.status is not Status.OPEN or state.kind not in self.policy.rules:
            return [self._quarantine(src, value, "OTHER",
                                     f"clock start {state.clock_id}: not an open clock of a "
                                     "known kind")]
        partition = src.partition
        part = self._part(partition)
        started = part.clocks.start(state)
        if started is None:
            return []  # already known: a replayed start
        if referrer:
            part.referrers[(state.event_id, state.owner)] = referrer
        out = [self._changelog(partition, started, referrer)]
        rule = self.policy.rules[state.kind]
        for kind, at, by in part.early.get((state.event_id, state.owner), ()):
            if kind in rule.stops_on and state.clock_id in part.clocks:
                out.append(self._changelog(partition, part.clocks.stop(state.clock_id, at, by),
                                           referrer))
        return out

    def on_ack(self, src: Source, value: bytes | None) -> list[Out]:
        """A subscriber's acknowledgement: stop the clocks it meets, tell the referrer."""
        owner = self.topics.subscriber_of_acks(src.topic)
        partition = src.partition
        try:
            ack = self.codec.decode(value or b"", ACKNOWLEDGEMENT)
        except CodecError as exc:
            return [self._quarantine(src, value, "SCHEMA_INVALID", f"acknowledgement: {exc}")]
        problem = ack_problem(ack)
        if problem is not None:
            return [self._quarantine(src, value, "SCHEMA_INVALID", f"acknowledgement: {problem}")]
        if owner is None or ack["subscriber"] != owner:
            return [self._quarantine(
                src, value, "AGENCY_MISMATCH",
                f"acknowledgement names subscriber {ack['subscriber']!r} but was written to "
                f"{owner!r}'s topic",
            )]
        part = self._part(partition)
        at = _ms(ack["acknowledged_at"])
        out: list[Out] = []
        met: list[ClockState] = []
        for kind, rule in self.policy.rules.items():
            if ack["kind"] not in rule.stops_on:
                continue
            cid = clock_id(kind, ack["event_id"], owner)
            if cid not in part.clocks:
                continue
            done = part.clocks.stop(cid, at, by=f"{owner}/{ack['actor']}")
            met.append(done)
            out.append(self._changelog(partition, done,
                                       part.referrers.get((done.event_id, owner))))
        referrer = part.referrers.get((ack["event_id"], owner))
        subject = met[0].subject if met else ""
        self._leaves.append(AuditLeaf(
            time_ms=self.clock.now_ms(), kind=LeafKind.ACKNOWLEDGED, event_id=ack["event_id"],
            event_digest=_sha256(value), source_agency=referrer or "", recipient=owner,
            outcome=ack["kind"], rule_id=",".join(c.kind for c in met), subject=subject,
            reason="MET" if met else "NO_OPEN_CLOCK",
            obligations=tuple(f"{c.kind}:{c.status.value}:{c.late_by_ms}" for c in met),
        ))
        if referrer is not None:
            status = self._status(referrer, ack)
            out.append(status)
            self._leaves.append(AuditLeaf(
                time_ms=self.clock.now_ms(), kind=LeafKind.NOTIFIED, event_id=ack["event_id"],
                event_digest=_sha256(value), source_agency=referrer, recipient=referrer,
                outcome=ack["kind"], subject=subject, reason="STATUS",
                delivered_digest=_sha256(status.value),
            ))
        elif not met:
            # Read before the start of the clock it may meet (the start commits
            # first, but the two topics are fetched apart): remember it, in the
            # changelog too, so the clock is met when its start arrives.
            by = f"{owner}/{ack['actor']}"
            part.early.setdefault((ack["event_id"], owner), []).append((ack["kind"], at, by))
            mark = ClockState(
                clock_id=f"{EARLY_ACK}{ack['kind']}:{ack['event_id']}:{owner}",
                kind=EARLY_ACK + ack["kind"], event_id=ack["event_id"], subject="", owner=owner,
                started_ms=at, due_ms=at, status=Status.MET, stopped_ms=at, stopped_by=by,
            )
            out.append(self._changelog(partition, mark, None))
        return out

    def tick(self, now_ms: int) -> list[tuple[int, Escalation]]:
        """Every tier due by ``now_ms``, applied (the caller rebuilds if its write fails)."""
        out: list[tuple[int, Escalation]] = []
        for p, part in self._parts.items():
            for esc in part.clocks.due(now_ms):
                part.clocks.apply(esc.state)
                out.append((p, esc))
            part.clocks.settle()
        return out

    def escalation_records(self, partition: int, esc: Escalation) -> list[Out]:
        referrer = self._parts[partition].referrers.get((esc.state.event_id, esc.state.owner))
        notice = {
            "notice_id": f"{esc.state.clock_id}:tier{esc.tier}",
            "kind": "ESCALATION",
            "recipient": esc.recipient,
            "event_id": esc.state.event_id,
            "subject": esc.state.subject,
            "about": esc.state.owner,
            "clock_kind": esc.state.kind,
            "due_at": esc.state.due_ms,
            "overdue_by_ms": esc.overdue_by_ms,
            "tier": esc.tier,
            "ack_kind": None,
            "rag": None,
            "outcome": None,
            "noticed_at": self.clock.now_ms(),
        }
        data = self.codec.encode(notice, NOTICE)
        self._leaves.append(AuditLeaf(
            time_ms=self.clock.now_ms(), kind=LeafKind.ESCALATED, event_id=esc.state.event_id,
            event_digest=_sha256(data), source_agency=referrer or "", recipient=esc.recipient,
            outcome=f"TIER_{esc.tier}", rule_id=esc.state.kind, subject=esc.state.subject,
            reason="OVERDUE", delivered_digest=_sha256(data),
            obligations=(f"owner:{esc.state.owner}", f"overdue_ms:{esc.overdue_by_ms}"),
        ))
        return [
            self._changelog(partition, esc.state, referrer),
            Out(self.topics.notices(esc.recipient), esc.state.event_id.encode(), data),
        ]

    def take_leaves(self) -> list[Out]:
        """This turn's audit leaves as one batch message for the audit log (or none)."""
        leaves, self._leaves = self._leaves, []
        if not leaves:
            return []
        return [Out(self.topics.audit, None, encode_batch(leaves))]

    def drop_leaves(self) -> None:
        """A failed turn: its leaves were never written."""
        self._leaves = []

    # -- records ----------------------------------------------------------------------
    def _changelog(self, partition: int, state: ClockState, referrer: str | None) -> Out:
        record = {
            "clock_id": state.clock_id,
            "kind": state.kind,
            "event_id": state.event_id,
            "subject": state.subject,
            "owner": state.owner,
            "referrer": referrer,
            "started_at": state.started_ms,
            "due_at": state.due_ms,
            "escalate_to": list(state.escalate_to),
            "status": state.status.value,
            "tiers_escalated": state.tiers_escalated,
            "stopped_at": state.stopped_ms,
            "stopped_by": state.stopped_by,
        }
        return Out(self.topics.clocks, state.clock_id.encode(),
                   self.codec.encode(record, CLOCK_RECORD), partition)

    def _status(self, referrer: str, ack: Mapping[str, Any]) -> Out:
        notice = {
            "notice_id": f"status:{ack['ack_id']}",
            "kind": "STATUS",
            "recipient": referrer,
            "event_id": ack["event_id"],
            "subject": "",
            "about": ack["subscriber"],
            "clock_kind": None,
            "due_at": None,
            "overdue_by_ms": None,
            "tier": None,
            "ack_kind": ack["kind"],
            "rag": ack.get("rag") if "rag" in self.referrer_sees else None,
            "outcome": ack.get("outcome") if "outcome" in self.referrer_sees else None,
            "noticed_at": self.clock.now_ms(),
        }
        return Out(self.topics.status(referrer), ack["event_id"].encode(),
                   self.codec.encode(notice, NOTICE))

    def _quarantine(self, src: Source, value: bytes | None, reason: str, detail: str) -> Out:
        record = {
            "original": value,
            "original_size": len(value) if value is not None else None,
            "source_topic": src.topic,
            "source_partition": src.partition,
            "source_offset": src.offset,
            "reason": reason,
            "detail": detail,
            "quarantined_at": self.clock.now_ms(),
        }
        log.warning("loop: quarantined %s: %s", src, detail)
        self._leaves.append(AuditLeaf(
            time_ms=self.clock.now_ms(), kind=LeafKind.QUARANTINED, event_id="",
            event_digest=_sha256(value), source_agency="",
            recipient=self.topics.subscriber_of_acks(src.topic) or "", reason=reason,
        ))
        return Out(self.topics.quarantine, None, self.codec.encode(record, QUARANTINE_RECORD))


def _sha256(data: bytes | None) -> str:
    return hashlib.sha256(data or b"").hexdigest()


def ack_problem(ack: Mapping[str, Any]) -> str | None:
    """What is wrong with an acknowledgement the schema accepts, or ``None``."""
    if ack["kind"] == "TRIAGE" and ack.get("rag") is None:
        return "rag: a TRIAGE acknowledgement gives the RAG rating (RED, AMBER or GREEN)"
    if ack["kind"] in ("DECISION", "OUTCOME") and ack.get("outcome") is None:
        return f"outcome: a {ack['kind']} acknowledgement says what was decided"
    return None


def state_of(record: Mapping[str, Any]) -> tuple[ClockState, str | None]:
    # Kinds, owners and recipients repeat across every clock: one copy each.
    return ClockState(
        clock_id=record["clock_id"],
        kind=sys.intern(record["kind"]),
        event_id=record["event_id"],
        subject=record["subject"],
        owner=sys.intern(record["owner"]),
        started_ms=_ms(record["started_at"]),
        due_ms=_ms(record["due_at"]),
        escalate_to=tuple(sys.intern(x) for x in record["escalate_to"]),
        status=Status(record["status"]),
        tiers_escalated=record["tiers_escalated"],
        stopped_ms=None if record["stopped_at"] is None else _ms(record["stopped_at"]),
        stopped_by=record["stopped_by"],
    ), record.get("referrer")


def _ms(value: Any) -> int:
    """Avro timestamp-millis as read (an aware datetime) or given (an int), as ms."""
    if isinstance(value, int):
        return value
    return int(round(value.timestamp() * 1000))
