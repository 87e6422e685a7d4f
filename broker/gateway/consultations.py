"""The record of who read what through the gateway (DPA 2018 s.62 logging).

Every read of feed records through the gateway (and the workspace's pages) is a
consultation: who (the authenticated principal; a person only as the keyed
HMAC of the user name), when, which records (event ids and Kafka coordinates,
never their content) and the stated purpose (one of the subscriber's purposes
in the policy, so no free text). Each record read is one ``CONSULTED`` audit
leaf (:mod:`broker.audit.leaf`) in the signed audit log, written and
acknowledged (``acks=all``) *before* the records are handed over: if it cannot
be written the read fails (503) rather than go unrecorded. Several writers
append to the audit partition (routers, the loop, the checkpointer): a leaf's
index is its committed position, so one more writer keeps the log's order.

Refused calls (403) are REFUSED audit leaves (who tried to act as whom, what
was attempted, the digest of the request) and JSON records on
``<ns>.gateway.consultations``, keyed by the party concerned; so is every event
the gateway signs for an agency that delegates signing to it (a SIGNED_FOR
leaf and a ``signed_for`` record).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as _hmac

from broker.audit.leaf import AuditLeaf, LeafKind, audit_encoder, encode_batch
from broker.clock import Clock, SystemClock
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import Producer, SendFuture
from broker.topics import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Consulted:
    """One record handed to a reader: its event id and where it lies."""

    event_id: str
    topic: str
    partition: int
    offset: int
    digest: str | None = None
    """SHA-256 (hex) of the copy's bytes as read, where the reader had them."""
    source_agency: str = ""
    """The event's source agency, where the reader could see it (not sealed)."""

    @property
    def where(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"


READER_KEY_FILE = "reader-pseudonym.key"
"""In ``$SAFESHARE_HOME/keys``: the key of people's pseudonyms in the audit log."""

_READER_DOMAIN = b"safeshare/audit/reader-pseudonym/v1\x00"


def reader_pseudonym(key: bytes, who: str) -> str:
    """``who`` as the audit log names it: an agency or subscriber principal as it is,
    a person (``user:NAME``) as ``user:`` and the hex HMAC-SHA256 of the name under
    ``key`` with a domain prefix (so the log holds no user name in clear)."""
    kind, sep, name = who.partition(":")
    if kind != "user" or not sep:
        return who
    mac = _hmac.HMAC(key, hashes.SHA256())
    mac.update(_READER_DOMAIN + name.encode("utf-8"))
    return "user:" + mac.finalize().hex()


def consulted_leaves(who: str, subscriber: str, purpose: str, records: Sequence[Consulted],
                     via: str, at_ms: int) -> list[AuditLeaf]:
    """One CONSULTED leaf per record read (``who`` already pseudonymised)."""
    return [
        AuditLeaf(
            time_ms=at_ms, kind=LeafKind.CONSULTED, event_id=r.event_id,
            event_digest=r.digest or hashlib.sha256(r.where.encode()).hexdigest(),
            source_agency=r.source_agency, recipient=subscriber, outcome="READ",
            reason=purpose, consulted_by=who, consulted_purpose=purpose, consulted_via=via,
            consulted_record=r.where,
        )
        for r in records
    ]


class Recorder:
    """Writes consultation leaves and refusal records; one per gateway process.

    ``reader_key`` keys the pseudonyms of people (:func:`reader_pseudonym`);
    without one a random key is made, so a person's reads link only within
    this process.
    """

    def __init__(self, producer: Producer, topics: Topics, clock: Clock | None = None,
                 reader_key: bytes | None = None,
                 new_producer: Callable[[], Producer] | None = None) -> None:
        """``new_producer`` replaces a producer that kafka-python has put in a
        fatal state (a record the broker refused for good: every later record of
        it would fail, and with it every later feed read); without it the
        recorder keeps failing until the process restarts."""
        self._producer = producer
        self._new_producer = new_producer
        self.topic = topics.consultations
        self.audit_topic = topics.audit
        self._clock = clock or SystemClock()
        self._reader_key = reader_key or os.urandom(32)

    def _acked(self, futures: Sequence[SendFuture]) -> None:
        """Wait for every record's acknowledgement; on a failure that broke the
        producer, replace it (this call still fails: nothing is shown)."""
        try:
            for f in futures:
                f.get()
        except KafkaError:
            if self._new_producer is not None and self._producer.broken:
                old, self._producer = self._producer, self._new_producer()
                log.warning("consultation recorder: producer refused a record for good;"
                            " replaced it")
                old.close(timeout=0)
            raise

    def _write(self, key: str, record: dict[str, Any]) -> None:
        data = json.dumps(record, sort_keys=True, separators=(",", ":")).encode()
        self._acked([self._producer.send(self.topic, data, key=key.encode())])

    def consultation(
        self, who: str, subscriber: str, purpose: str, records: Sequence[Consulted], via: str
    ) -> None:
        """Record that ``who`` was shown ``records`` of ``subscriber``'s feed: one
        audit batch, acknowledged before this returns (raises if it cannot be)."""
        if not records:
            return
        self.audit(consulted_leaves(reader_pseudonym(self._reader_key, who), subscriber,
                                    purpose, records, via, self._clock.now_ms()))

    def audit(self, leaves: Sequence[AuditLeaf]) -> None:
        """Append ``leaves`` to the signed audit log as one batch, acknowledged
        (``acks=all``) before this returns; raises if it cannot be. The workspace's
        NOTIFIED leaves (broker/workspace/notify.py) go through here too."""
        if leaves:
            # In messages under the broker's size limit: a long chronology read at
            # once is thousands of leaves.
            payloads = audit_encoder([leaf.to_bytes() for leaf in leaves])
            self._acked([self._producer.send(self.audit_topic, p) for p in payloads])

    def signed_for(self, agency: str, event_id: str, digest: str) -> None:
        """Record that the gateway signed an event for ``agency`` (``signing: gateway``):
        a SIGNED_FOR leaf in the signed audit log and a record on the consultations
        topic, both acknowledged before this returns (raises if either cannot be)."""
        now = self._clock.now_ms()
        leaf = AuditLeaf(
            time_ms=now, kind=LeafKind.SIGNED_FOR, event_id=event_id, event_digest=digest,
            source_agency=agency, outcome="SIGNED", reason="signing: gateway",
        )
        logged = self._producer.send(self.audit_topic, encode_batch([leaf]))
        self._write(f"agency:{agency}", {
            "kind": "signed_for",
            "by": "gateway",
            "agency": agency,
            "event_id": event_id,
            "digest": digest,
            "at_ms": now,
        })
        self._acked([logged])

    def refusal(self, who: object, action: str, claimed: str, body: bytes = b"") -> None:
        """Record a refused call, who tried to act as whom (ids only): a REFUSED
        leaf in the signed audit log (the digest of the refused ``body``, never
        the body) and a record on the consultations topic; both acknowledged
        before this returns (raises if either cannot be written)."""
        now = self._clock.now_ms()
        kind, _, ident = claimed.partition(":")
        leaf = AuditLeaf(
            time_ms=now, kind=LeafKind.REFUSED, event_id="",
            event_digest=hashlib.sha256(body).hexdigest(),
            source_agency=ident if kind == "agency" else "",
            recipient=ident if kind == "subscriber" else "",
            outcome="FORBIDDEN", reason=action,
            refused_by=reader_pseudonym(self._reader_key, str(who)),
        )
        logged = self._producer.send(self.audit_topic, encode_batch([leaf]))
        self._write(str(claimed), {
            "kind": "refusal",
            "by": str(who),
            "claimed": claimed,
            "action": action,
            "at_ms": now,
        })
        self._acked([logged])
