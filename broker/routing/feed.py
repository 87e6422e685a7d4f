"""A subscriber's copy: a FeedRecord of the decision and the redacted event.

Written without encoding the event again: the record is its fields'
encodings one after the other (Avro), so a copy is the record's header, the
decision's body and the event's redacted bytes (broker.codec._write, ._read).
"""

from __future__ import annotations

from typing import Any

from broker.codec import Codec
from broker.codec._write import long_bytes
from broker.codec.exceptions import CodecError, EncodingError
from broker.policy.decision import Decision

FEED_RECORD = "safeshare.FeedRecord"
DECISION_RECORD = "safeshare.Decision"
# Distinct (subscriber, rule, grant) decision heads kept; a policy has a few dozen.
_DECISION_HEADS_MAX = 4096


class FeedWriter:
    """The bytes of each subscriber's FeedRecord, for one codec."""

    def __init__(self, codec: Codec) -> None:
        self.codec = codec
        self._header = _feed_layout(codec)
        self._decision_heads: dict[tuple[Any, ...], bytes] = {}

    def record(self, decision: Decision, event_body: bytes) -> bytes:
        """A FeedRecord's single-object bytes: header, the decision, the redacted event.

        The same bytes as ``codec.encode({"decision": ..., "event": copy},
        FEED_RECORD)`` (an Avro record is its fields' encodings one after the
        other; tests hold the two equal), without encoding the event again.
        """
        data = (
            self._header
            + self._decision_body(decision)
            + event_body
        )
        if len(data) > self.codec.max_message_bytes:
            raise EncodingError(
                f"(root): feed record is {len(data)} bytes, over the limit of"
                f" {self.codec.max_message_bytes}"
            )
        return data

    def _decision_body(self, decision: Decision) -> bytes:
        """The Avro body of a feed record's Decision.

        All but its last field (``decided_at``) are the same for every event a
        rule shares with a subscriber, so without obligations that part is
        written once and kept: the body is that head and the time (an Avro
        record is its fields' encodings in order; ``_feed_layout`` checked
        ``decided_at`` is the last field and a long).
        """
        if decision.obligations:
            return self.codec.body_trusted(_decision_record(decision), DECISION_RECORD)
        key = (
            decision.subscriber,
            decision.rule_id,
            decision.lawful_basis,
            decision.policy_digest,
            frozenset(decision.data_classes_shared),
            tuple(decision.fields_redacted),
        )
        head = self._decision_heads.get(key)
        if head is None:
            body = self.codec.body_trusted(
                dict(_decision_record(decision), decided_at=0), DECISION_RECORD
            )
            head = body[:-1]  # the long 0 is the single byte 0x00
            if len(self._decision_heads) >= _DECISION_HEADS_MAX:
                self._decision_heads.clear()
            self._decision_heads[key] = head
        return head + long_bytes(decision.now_ms)


def _feed_layout(codec: Codec) -> bytes:
    """The FeedRecord header, after checking the record is (decision, event) as
    :meth:`FeedWriter.record` assumes — a schema change must change both."""
    raw = codec.raw_schemas()[FEED_RECORD]
    layout = [(f["name"], f["type"]["name"]) for f in raw["fields"]]
    expected = [("decision", "Decision"), ("event", "ConcernEvent")]
    if [(n, t.rsplit(".", 1)[-1]) for n, t in layout] != expected:
        raise CodecError(f"{FEED_RECORD} fields are {layout}, the router writes {expected}")
    last = codec.raw_schemas()[DECISION_RECORD]["fields"][-1]
    kind = last["type"]["type"] if isinstance(last["type"], dict) else last["type"]
    if last["name"] != "decided_at" or kind != "long":
        raise CodecError(f"{DECISION_RECORD} must end with decided_at (a long), not {last}")
    return codec.header(FEED_RECORD)


def _decision_record(decision: Decision) -> dict[str, Any]:
    return {
        "subscriber": decision.subscriber,
        "rule_id": decision.rule_id,
        "lawful_basis": str(decision.lawful_basis or ""),
        "policy_digest": decision.policy_digest,
        "data_classes_shared": sorted(decision.data_classes_shared),
        "fields_redacted": sorted(decision.fields_redacted),
        "obligations": [{"code": str(o.code), "due_at": o.due_at_ms} for o in decision.obligations],
        "decided_at": decision.now_ms,
    }
