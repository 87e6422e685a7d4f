"""A subscriber's copy: a FeedRecord of the decision and the redacted event, and
where it goes (:class:`Recipients`: the feed topic, its record key, its sealing).

Written without encoding the event again: the record is its fields'
encodings one after the other (Avro), so a copy is the record's header, the
decision's body and the event's redacted bytes (broker.codec._write, ._read).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from typing import Any

from broker.codec import Codec
from broker.codec._write import long_bytes
from broker.codec.exceptions import CodecError, EncodingError
from broker.policy.decision import Decision
from broker.signing.feeds import FeedKeyError, FeedPublicKey, current_key, seal_message

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
        data = b"".join((self._header, self._decision_body(decision), event_body))  # one copy
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


class Recipients:
    """Per subscriber: its feed topic and HPKE feed keys (kept), the copy's record
    key, and the sealing of a confidential subscriber's copy."""

    def __init__(
        self,
        *,
        codec: Codec,
        decider: Any,
        feed_topic_of: Callable[[str], str],
        pseudonym_key: bytes,
    ) -> None:
        self._codec = codec
        self._decider = decider
        self._feed_topic_of = feed_topic_of
        self._pseudonym_key = pseudonym_key
        self._found: dict[str, tuple[str, tuple[FeedPublicKey, ...]]] = {}

    def of(self, subscriber: str) -> tuple[str, tuple[FeedPublicKey, ...]]:
        """(feed topic, feed keys: none for a plain feed) of ``subscriber``."""
        found = self._found.get(subscriber)
        if found is None:
            found = (self._feed_topic_of(subscriber), self._feed_keys(subscriber))
            self._found[subscriber] = found
        return found

    def _feed_keys(self, subscriber: str) -> tuple[FeedPublicKey, ...]:
        """The subscriber's HPKE feed keys (broker.signing.feeds); none: a plain feed."""
        lookup = getattr(self._decider, "subscriber", None)
        record = lookup(subscriber) if lookup is not None else None
        return tuple(
            FeedPublicKey.from_b64(
                k.kem, k.public_key, not_before_ms=k.not_before_ms, not_after_ms=k.not_after_ms
            )
            for k in getattr(record, "feed_keys", ())
        )

    def seal(
        self, keys: tuple[FeedPublicKey, ...], subscriber: str, event_id: str, data: bytes, now: int
    ) -> bytes:
        """A confidential subscriber's copy sealed to its current key (never plaintext)."""
        key = current_key(keys, now)
        if key is None:  # the policy refuses this at load; fail closed all the same
            raise FeedKeyError(f"subscriber {subscriber!r} has no feed key valid now")
        return seal_message(self._codec, key, subscriber, event_id, data)

    def key(self, pseudonym: str | None, shared: bool) -> bytes | None:
        """The feed record key: the pseudonym if the recipient may see it, else an
        opaque keyed digest of it, which keeps one child's events in order on one
        partition without telling the recipient who the child is."""
        if not pseudonym:
            return None
        if shared:
            return pseudonym.encode()
        return (
            hmac.new(
                self._pseudonym_key, b"safeshare-feed-key:" + pseudonym.encode(), hashlib.sha256
            )
            .hexdigest()[:32]
            .encode()
        )
