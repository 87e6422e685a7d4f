"""The router's decision core: one inbound Kafka message in, the records to write out.

No I/O here: :class:`RoutingCore` turns an :class:`Inbound` message into the
feed copies, quarantine records and audit leaves that must be written *together*
(the service writes them in one Kafka transaction with the consumer offsets).
That keeps every routing rule unit-testable while the integration tests run the
real thing on a real broker.

Every message ends in exactly one of:

- shared to one or more subscribers and/or withheld from the others
  (one audit leaf per subscriber decision);
- quarantined with its original bytes and a reason (one audit leaf);
- recognised as a duplicate event id (one audit leaf, nothing shared).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Protocol

from broker.audit.exceptions import AuditError, MalformedError
from broker.audit.leaf import AuditLeaf, LeafKind, SubjectPseudonymiser
from broker.audit.leaf_writer import LeafWriter
from broker.clock import Clock
from broker.codec import Codec
from broker.codec.codec import Redactable
from broker.codec.exceptions import (
    CodecError,
    DecodingError,
    EncodingError,
    UnknownSchemaError,
)
from broker.codec.limits import MAX_EVENT_BYTES, event_size_problem
from broker.codec.times import DEFAULT_BOUNDS, TimeBounds
from broker.policy.consent import ConsentRecord, ConsentStore, ConsentVerdict
from broker.policy.decision import Decision
from broker.routing.dedup import SeenEvents
from broker.routing.feed import FeedWriter, Recipients
from broker.routing.identity import SubjectIdentity
from broker.routing.identity_decisions import consent_subject, handle_decision, name_subject
from broker.routing.identity_notices import note_shares
from broker.signing import signature_problem
from broker.topics import Topics

log = logging.getLogger(__name__)

ENVELOPE = "safeshare.ConcernEvent"
QUARANTINE_RECORD = "safeshare.QuarantineRecord"
CONSENT_PAYLOAD = "safeshare.ConsentRecord"

DEFAULT_MAX_MESSAGE_BYTES = MAX_EVENT_BYTES  # the one limit (broker.codec.limits)
# What of an original message a quarantine record holds (under the codec's and
# Kafka's 1 MiB default message limits, with room for the record's other fields).
QUARANTINE_ORIGINAL_MAX = 900 * 1024
# The digest of a consent record known by its id only (never: each record has its own).
_NO_DIGEST = "0" * 64


class Inbound(NamedTuple):
    """A consumed Kafka record, as the router sees it (a tuple: made per record)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int = 0

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Outbound(NamedTuple):
    """A record to produce."""

    topic: str
    key: bytes | None
    value: bytes | None  # None: a tombstone (the identity index forgets a child)


ClockStarterFn = Callable[[Mapping[str, Any], Any, str, int], list[tuple[str, bytes, bytes]]]
"""``(event, decision, subject HMAC, now_ms) -> [(topic, key, value)]``: broker.loop.starter."""


class Decider(Protocol):
    """What the router needs of the policy (broker.policy.Policy)."""

    def decide_all(
        self, event: Mapping[str, Any], consents: Any, now_ms: int
    ) -> Sequence[Decision]: ...


@dataclass
class Routed:
    """Everything one inbound message produced."""

    outputs: list[Outbound] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    """The audit leaves' canonical bytes (broker.audit.leaf_writer), one per decision."""
    shared: list[str] = field(default_factory=list)
    withheld: list[tuple[str, str]] = field(default_factory=list)
    quarantined: str | None = None
    duplicate: bool = False
    event_id: str | None = None
    agency: str | None = None
    reported_at_ms: int | None = None
    #: How the router named the child (LINK, NEW, REVIEW); None: the event named it.
    identity: str | None = None


def _ms(value: Any) -> int:
    if isinstance(value, int):
        return value
    return int(value.timestamp() * 1000)


class RoutingCore:
    """Pure routing logic; see module docstring."""

    def __init__(
        self,
        *,
        codec: Codec,
        decider: Decider,
        consents: Any,
        topics: Topics,
        clock: Clock,
        pseudonym_key: bytes,
        feed_topic_of: Callable[[str], str] | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        seen_event_ids: SeenEvents | None = None,
        clock_starter: ClockStarterFn | None = None,
        time_bounds: TimeBounds = DEFAULT_BOUNDS,
        identity: SubjectIdentity | None = None,
    ) -> None:
        """``identity``: derives the pseudonym of an event that has none (no
        identity: such an event is quarantined, fail closed)."""
        self.codec = codec
        self.identity = identity
        self.decider = decider
        self.consents = consents
        self.topics = topics
        self.clock = clock
        self.max_message_bytes = max_message_bytes
        self.time_bounds = time_bounds
        self.seen_event_ids = seen_event_ids if seen_event_ids is not None else SeenEvents()
        self._feed = FeedWriter(codec)
        self._to = Recipients(
            codec=codec, decider=decider, feed_topic_of=feed_topic_of or topics.feed,
            pseudonym_key=pseudonym_key,
        )  # fmt: skip
        # The statutory clocks a share starts, written in the share's transaction.
        self._clock_starter = clock_starter
        self._subject_pseudonym = SubjectPseudonymiser(pseudonym_key)
        if isinstance(consents, ConsentStore):
            # Keyed as the audit leaves are, so the state rebuilds from them.
            consents.key_subjects_with(self._subject_pseudonym)
            if identity is not None:
                # A linked child's consent records, under any of its pseudonyms, count.
                consents.link_subjects_with(identity.linked_with)
        self._leaves = LeafWriter()

    # -- audit helpers -------------------------------------------------------
    def subject_hmac(self, pseudonym: str | None) -> str:
        """Keyed pseudonym of the subject for the audit log: no identifier in clear."""
        if not pseudonym:
            return ""
        return self._subject_pseudonym(pseudonym)

    # -- entry point ---------------------------------------------------------
    def handle(self, msg: Inbound) -> Routed:
        """Route one message. Never raises for anything a message can contain.

        An unexpected failure while routing one message (a defect, not bad
        input) quarantines that message with reason OTHER, so one poison
        message cannot stop every other child's events; the error is logged
        with the message's coordinates for the operators. An audit leaf that
        cannot be written (:class:`MalformedError`) is raised instead: nothing
        is shared without its audit record, so the router's transaction fails.
        """
        try:
            if msg.topic.startswith(self.topics.consent_prefix):
                return self._handle_consent(msg)
            if msg.topic.startswith(self.topics.identity_decisions_prefix):
                return handle_decision(self, msg)
            return self._handle_ingest(msg)
        except MalformedError:
            raise
        except Exception as exc:  # noqa: BLE001 - see docstring
            log.exception("internal error routing %s; quarantining it", msg.where)
            return self._quarantine(msg, "OTHER", f"internal error: {type(exc).__name__}", Routed())

    def _quarantine(self, msg: Inbound, reason: str, detail: str, routed: Routed) -> Routed:
        now = self.clock.now_ms()
        original = msg.value
        if original is not None and len(original) > QUARANTINE_ORIGINAL_MAX:
            # Too big for one quarantine record: keep the head and say where the
            # whole message still is (the ingest topic keeps it), with its digest.
            detail += (
                f"; original truncated to its first {QUARANTINE_ORIGINAL_MAX} bytes, the whole"
                f" message (sha256 {hashlib.sha256(original).hexdigest()}) is at {msg.where}"
            )
            original = original[:QUARANTINE_ORIGINAL_MAX]
        record = {
            "original": original,
            "original_size": len(msg.value) if msg.value is not None else None,
            "source_topic": msg.topic,
            "source_partition": msg.partition,
            "source_offset": msg.offset,
            "reason": reason,
            "detail": detail,
            "quarantined_at": now,
        }
        routed.outputs.append(
            Outbound(self.topics.quarantine, None, self.codec.encode(record, QUARANTINE_RECORD))
        )
        routed.quarantined = reason
        routed.leaves.append(
            self._leaves.quarantined(
                time_ms=now,
                event_id=routed.event_id or "",
                event_digest=hashlib.sha256(msg.value or b"").hexdigest(),
                source_agency=routed.agency or "",
                reason=reason,
            )
        )
        # At debug: the service says it once the batch is committed (a replayed
        # batch is routed again).
        log.debug("quarantined %s reason=%s event=%s", msg.where, reason, routed.event_id or "-")
        return routed

    def _decode(self, msg: Inbound, routed: Routed) -> tuple[dict[str, Any], Redactable] | None:
        """The event, and its bytes ready for redacted copies (spliced from the
        inbound bytes when they are the writer's own, broker.codec._read), or
        None when the message was quarantined."""
        value = msg.value
        if value is None:
            self._quarantine(msg, "UNDECODABLE", "empty message (no value)", routed)
            return None
        too_big = event_size_problem(len(value), self.max_message_bytes)
        if too_big is not None:
            self._quarantine(msg, "OVERSIZED", too_big, routed)
            return None
        try:
            return self.codec.decode_for_routing(value, ENVELOPE)
        except UnknownSchemaError as exc:
            self._quarantine(msg, "UNKNOWN_SCHEMA", str(exc), routed)
        except (DecodingError, EncodingError) as exc:
            reason = "SCHEMA_INVALID" if isinstance(exc, EncodingError) else "UNDECODABLE"
            self._quarantine(msg, reason, str(exc), routed)
        except CodecError as exc:
            self._quarantine(msg, "UNDECODABLE", str(exc), routed)
        return None

    def _handle_consent(self, msg: Inbound) -> Routed:
        """A message of an agency's consent topic: applied and audited, or quarantined.

        Accepted only if it is a consent record of the topic's owner (Kafka ACLs
        let only that agency write the topic), validly signed where the policy
        asks, not seen before, and entitled by the policy (who may record consent
        for which purpose, who may withdraw what another agency recorded). An
        accepted record changes the consent state at once (so later events of
        the batch see it; :meth:`rollback_consents` takes it back if the
        transaction aborts) and is a CONSENT leaf; every instance rebuilds its
        state from those leaves (:meth:`learn_consent_leaf`). A tombstone ends
        nothing: consent ends only by a signed WITHDRAWN record or by expiry.
        """
        routed = Routed()
        owner = self.topics.agency_of_consent(msg.topic)
        routed.agency = owner
        if msg.value is None:
            return self._quarantine(
                msg,
                "NOT_ENTITLED",
                "a tombstone cannot end consent: consent ends only by a signed WITHDRAWN"
                " record or by expiry",
                routed,
            )
        decoded = self._decode(msg, routed)
        if decoded is None:
            return routed
        event = decoded[0]
        routed.event_id = event_id = event["event_id"]
        routed.agency = agency = event["source"]["agency_id"]
        problem = _consent_problem(event)
        if problem:
            return self._quarantine(msg, "SCHEMA_INVALID", problem, routed)
        if agency != owner:
            return self._quarantine(
                msg,
                "AGENCY_MISMATCH",
                f"consent record claims agency {agency!r} but arrived on {msg.topic} owned by"
                f" {owner!r}",
                routed,
            )
        now = self.clock.now_ms()
        problem = self._signature_problem(msg.value, event, agency, now)
        if problem:
            return self._quarantine(msg, "BAD_SIGNATURE", problem, routed)
        try:  # the schema's event-time rule, at the router's clock (broker.codec.times)
            self.codec.check_times(event, now, self.time_bounds, ENVELOPE)
        except EncodingError as exc:
            return self._quarantine(msg, "SCHEMA_INVALID", str(exc), routed)
        given = event["subject"].get("pseudonym")
        named = not given
        placed = None
        if named:  # the router names the child, as for an event (only if certain)
            pseudonym, placed, why_not = consent_subject(self, event)
            if pseudonym is None:
                return self._quarantine(msg, "OTHER", why_not, routed)
            event["subject"]["pseudonym"] = pseudonym
        elif self.identity is not None and (survivor := self.identity.survivor_of(given)):
            event["subject"]["pseudonym"] = survivor  # linked into another child
        try:
            record = ConsentRecord.from_event(event)
        except (KeyError, TypeError, ValueError) as exc:
            return self._quarantine(msg, "SCHEMA_INVALID", f"consent record: {exc}", routed)
        digest = hashlib.sha256(msg.value).hexdigest()
        subject = self.subject_hmac(record.subject)
        # Held as its leaf will read back (keyed pseudonym, what the leaf keeps), so a
        # restarted router rebuilding from the audit log decides exactly as this one.
        record = dataclasses.replace(record, subject=subject, recorded_at_ms=None, digest=digest)
        if event_id in self.seen_event_ids:
            routed.duplicate = True
            audited = self._leaves.event(
                event_id=event_id, event_digest=digest, source_agency=agency, subject=subject
            )
            routed.leaves.append(self._leaves.duplicate(audited, time_ms=now))
            log.info("duplicate consent record %s event=%s not applied again", msg.where, event_id)
            return routed
        # The record that decides for the child now: under any of its pseudonyms.
        previous = self.consents.get(event["subject"]["pseudonym"], record.purpose)
        verdict = self._consent_entitlement(event, record, previous, now)
        if verdict.problem is not None:
            return self._quarantine(msg, "NOT_ENTITLED", verdict.problem, routed)
        self.seen_event_ids.add(event_id)
        if named:  # the record joins its child's index entry, in this transaction
            name_subject(self, event, routed, now, placed)
        self.consents.put_keyed(subject, record, applied_at_ms=now)
        routed.leaves.append(
            self._consent_leaf(
                record, subject, digest, now, str(record.status),
                rule_id=verdict.rule_id, reason=verdict.reason,
                replaces=previous.record_id if previous is not None else None,
            )
        )  # fmt: skip
        log.info(
            "consent record %s event=%s applied: %s for %s",
            msg.where, event_id, record.status, record.purpose,
        )  # fmt: skip
        return routed

    def _consent_entitlement(
        self,
        event: Mapping[str, Any],
        record: ConsentRecord,
        previous: ConsentRecord | None,
        now_ms: int,
    ) -> ConsentVerdict:
        """What the policy says of this record; fail closed without a policy that judges."""
        judge = getattr(self.decider, "consent_entitlement", None)
        if judge is None:
            return ConsentVerdict(problem="the policy names no one who may record consent")
        verdict: ConsentVerdict = judge(
            agency=record.recorder,
            local_authority=str((event.get("subject") or {}).get("local_authority") or ""),
            purpose=record.purpose,
            status=record.status,
            previous=previous,
            now_ms=now_ms,
        )
        return verdict

    def _consent_leaf(
        self,
        record: ConsentRecord,
        subject: str,
        digest: str,
        now: int,
        outcome: str,
        *,
        rule_id: str,
        reason: str,
        replaces: str | None,
    ) -> bytes:
        """The CONSENT audit leaf of an applied record or of its expiry (broker.audit.leaf)."""
        return self._leaves.other({
            "kind": "CONSENT",
            "time_ms": now,
            "event_id": record.record_id,
            "event_digest": digest,
            "source_agency": record.recorder,
            "subject": subject,
            "outcome": outcome,
            "rule_id": rule_id,
            "reason": reason,
            "policy_digest": str(getattr(self.decider, "digest", "") or ""),
            "consent_ref": replaces,
            "consent_purpose": record.purpose,
            "consent_roles": sorted(record.roles),
            "consent_data_classes": sorted(record.data_classes),
            "consent_expires_ms": record.expires_at_ms,
        })

    def _expiry_leaves(
        self, expired: list[tuple[str, ConsentRecord]], now: int, routed: Routed
    ) -> None:
        """A CONSENT leaf (EXPIRED) for each record a decision of this event found lapsed
        for the first time: the lapse takes effect, and the audit says so, once."""
        for subject, record in expired:
            routed.leaves.append(
                self._consent_leaf(
                    record, subject, record.digest or _NO_DIGEST, now, "EXPIRED",
                    rule_id="", replaces=record.record_id,
                    reason=f"consent record {record.record_id} lapsed; decisions from now on"
                    " have no consent from it",
                )
            )  # fmt: skip

    # -- consent state, per transaction and from the audit log ---------------------
    def begin_consents(self) -> None:
        """A transaction starts: consent changes (and identity index records) from now
        on can be taken back."""
        if self.identity is not None:
            self.identity.begin()
        begin = getattr(self.consents, "begin", None)
        if begin is not None:
            begin()

    def rollback_consents(self) -> None:
        """The transaction aborted: its consent records and expiries, and the identity
        index records it added, never happened."""
        if self.identity is not None:
            self.identity.rollback()
        rollback = getattr(self.consents, "rollback", None)
        if rollback is not None:
            rollback()

    def learn_identity_record(
        self, key: bytes | None, value: bytes | None, *, live: bool = False
    ) -> bool:
        """Fold a committed identity-topic record into the index (see broker.routing.identity);
        ``live``: following, not rebuilding (another instance's new child is scored)."""
        if self.identity is None:
            return False
        return self.identity.learn(key, value, live=live)

    def learn_consent_leaf(self, data: bytes) -> bool:
        """Fold a committed CONSENT leaf (another instance's, or any after a restart) into
        the consent state; False if ``data`` is not one. Only accepted records have such
        leaves, so a quarantined record never reaches the state this way."""
        try:
            leaf = AuditLeaf.from_bytes(data)
        except AuditError:
            return False
        if leaf.kind is not LeafKind.CONSENT or leaf.consent_purpose is None:
            return False
        self.seen_event_ids.add(leaf.event_id)
        if leaf.outcome == "EXPIRED":
            self.consents.note_expiry(leaf.event_id)
            return True
        record = ConsentRecord(
            record_id=leaf.event_id,
            subject=leaf.subject,
            purpose=leaf.consent_purpose,
            status=leaf.outcome,
            roles=frozenset(leaf.consent_roles or ()),
            data_classes=frozenset(leaf.consent_data_classes or ()),
            expires_at_ms=leaf.consent_expires_ms,
            recorder=leaf.source_agency,
            digest=leaf.event_digest,
        )
        self.consents.put_keyed(leaf.subject, record, applied_at_ms=leaf.time_ms)
        return True

    def _handle_ingest(self, msg: Inbound) -> Routed:
        routed = Routed()
        decoded = self._decode(msg, routed)
        if decoded is None:
            return routed
        event, written = decoded
        event_id = event["event_id"]
        agency = event["source"]["agency_id"]
        routed.event_id, routed.agency = event_id, agency
        routed.reported_at_ms = _ms(event["reported_at"])
        owner = self.topics.agency_of_ingest(msg.topic)
        if owner != agency:
            return self._quarantine(
                msg,
                "AGENCY_MISMATCH",
                f"event claims agency {agency!r} but arrived on {msg.topic} owned by {owner!r}",
                routed,
            )
        now = self.clock.now_ms()
        problem = self._signature_problem(msg.value or b"", event, agency, now)
        if problem is not None:
            return self._quarantine(msg, "BAD_SIGNATURE", problem, routed)
        try:  # the schema's event-time rule, at the router's clock (broker.codec.times)
            self.codec.check_times(event, now, self.time_bounds, ENVELOPE)
        except EncodingError as exc:
            return self._quarantine(msg, "SCHEMA_INVALID", str(exc), routed)
        event_digest = hashlib.sha256(msg.value or b"").hexdigest()
        subject = self.subject_hmac(event["subject"].get("pseudonym"))
        # What all of this event's leaves share, checked and written once.
        audited = self._leaves.event(
            event_id=event_id, event_digest=event_digest, source_agency=agency, subject=subject
        )
        if event_id in self.seen_event_ids:
            routed.duplicate = True
            routed.leaves.append(self._leaves.duplicate(audited, time_ms=now))
            log.info("duplicate %s event=%s not shared again", msg.where, event_id)
            return routed
        pseudonym = event["subject"].get("pseudonym")
        survivor = self.identity.survivor_of(pseudonym) if self.identity and pseudonym else None
        if not pseudonym or survivor:
            if survivor:  # a person linked this pseudonym into another child
                pseudonym = event["subject"]["pseudonym"] = survivor
            elif self.identity is None:
                return self._quarantine(
                    msg, "OTHER", "subject.pseudonym is null and the router holds no"
                    " partnership key to derive it: not shared", routed,
                )  # fmt: skip
            else:  # the router names the child (HMAC of the NHS number, else linkage)
                pseudonym = name_subject(self, event, routed, now)
            # The copies carry the router's pseudonym: encoded, not spliced.
            written = self.codec.written(event, ENVELOPE)
            subject = self.subject_hmac(pseudonym)
            audited = self._leaves.event(
                event_id=event_id, event_digest=event_digest, source_agency=agency,
                subject=subject,
            )  # fmt: skip
        self.seen_event_ids.add(event_id)
        feed_keys: dict[bool, bytes | None] = {}
        shown: dict[str, bool] = {}  # recipient -> its copy shows the pseudonym
        outputs, leaves, leaf = routed.outputs, routed.leaves, self._leaves.decision
        for decision in self.decider.decide_all(event, self.consents, now):
            subscriber = decision.subscriber
            reason = str(decision.reason_code)
            if decision.outcome != "SHARE":
                leaves.append(leaf(decision, audited, None))
                routed.withheld.append((subscriber, reason))
                continue
            classes = decision.data_classes_shared
            # Each subscriber's copy is a splice of the event's bytes with its
            # redacted fields nulled (broker.codec._write, ._read).
            data = self._feed.record(decision, written.redacted(classes))
            topic, sealing = self._to.of(subscriber)
            if sealing:
                data = self._to.seal(sealing, subscriber, event_id, data, now)
            # A sealed copy's record key never shows the pseudonym (it is inside).
            granted = "pseudonym" in classes and not sealing
            if granted not in feed_keys:
                feed_keys[granted] = self._to.key(pseudonym, granted)
            outputs.append(Outbound(topic, feed_keys[granted], data))
            routed.shared.append(subscriber)
            shown[subscriber] = "pseudonym" in classes
            if self._clock_starter is not None:
                for start in self._clock_starter(event, decision, subject, now):
                    outputs.append(Outbound(*start))
            delivered = hashlib.sha256(data).hexdigest()
            leaves.append(leaf(decision, audited, delivered))
        if self.identity is not None and shown:
            # Who holds the child's records (told of a link), what went out under a
            # linked child (an unlink says): in its index entry.
            note_shares(self, routed, pseudonym, event_id, shown)
        take_expired = getattr(self.consents, "take_expired", None)
        if take_expired is not None:
            self._expiry_leaves(take_expired(), now, routed)
        return routed

    def _signature_problem(
        self, data: bytes, event: Mapping[str, Any], agency: str, now_ms: int
    ) -> str | None:
        """Why the event's agency signature is not acceptable, or None if it is.

        Required when the policy says ``event_signatures: required`` or when the
        agency has registered keys; a signature that is present is always checked.
        """
        registry = getattr(self.decider, "agency", None)
        record = registry(agency) if registry is not None else None
        keys = record.keys if record is not None else ()
        mode = getattr(self.decider, "event_signatures", "required")
        return signature_problem(
            data, event.get("signature"), agency, keys, required=mode == "required", at_ms=now_ms
        )


def _consent_problem(event: Mapping[str, Any]) -> str | None:
    payload = event.get("payload")
    if not (isinstance(payload, tuple) and payload[0] == CONSENT_PAYLOAD):
        return "consent topic carries a non-consent payload"
    return None
