"""A deciding subscriber's identity desk: review items in, link and unlink decisions out.

What a person in the MASH uses (``safeshare identity review|link|unlink|keep-apart|show``
and :class:`broker.api.IdentityDesk` are this class)::

    with IdentityDesk(bootstrap=..., subscriber="torbay-mash") as desk:
        for item in desk.reviews():           # open review items, oldest first
            desk.link(item["candidate"], item["provisional"],
                      decided_by="A. Social Worker", review_id=item["review_id"])

A decision is an ``IdentityDecision`` on the subscriber's own decisions topic
(only it may write there); the router applies it if the policy's
``identity.deciders`` names the subscriber, and quarantines it otherwise. The
desk holds no keys and sees only pseudonyms.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any, Final

from broker.clock import Clock, SystemClock
from broker.codec import Codec
from broker.kafka.consumer import catch_up, make_consumer
from broker.kafka.producer import make_producer
from broker.kafka.structs import Closeable, Record, TopicPartition
from broker.topics import DEFAULT, Topics

DECISION: Final = "safeshare.IdentityDecision"
REVIEW_ITEM: Final = "safeshare.IdentityReview"


class IdentityDesk(Closeable):
    """Reads one subscriber's review items and writes its people's decisions."""

    def __init__(
        self,
        *,
        bootstrap: str,
        subscriber: str,
        codec: Codec | None = None,
        topics: Topics = DEFAULT,
        client_config: Mapping[str, Any] | None = None,
        clock: Clock | None = None,
    ) -> None:
        self.subscriber = subscriber
        self.reviews_topic = topics.identity_reviews(subscriber)
        self.decisions_topic = topics.identity_decisions(subscriber)
        self._bootstrap = bootstrap
        self._config = dict(client_config or {})
        self._codec = codec or Codec.default()
        self._clock = clock or SystemClock()
        self._producer = make_producer(bootstrap, **self._config)

    # -- reading ---------------------------------------------------------------
    def _read(self, schemas: Mapping[str, str], timeout_s: float
              ) -> dict[str, list[dict[str, Any]]]:
        """Every record of each topic of ``schemas`` (topic -> schema), in the order
        read: one consumer and one catch-up for all of them."""
        out: dict[str, list[dict[str, Any]]] = {topic: [] for topic in schemas}
        consumer = make_consumer(self._bootstrap, group_id=None, **self._config)
        try:
            tps = [TopicPartition(topic, p) for topic in schemas
                   for p in sorted(consumer.partitions_for_topic(topic) or ())]
            if not tps:
                return out
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)

            def handle(r: Record) -> None:
                if r.value is not None:
                    out[r.topic].append(self._codec.decode(r.value, schemas[r.topic]))

            catch_up(consumer, tps, handle, timeout_s=timeout_s)
            return out
        finally:
            consumer.close()

    def items(self, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Every review item raised for this subscriber, oldest first (one per review id)."""
        return _once(self._read({self.reviews_topic: REVIEW_ITEM}, timeout_s)[self.reviews_topic])

    def decisions(self, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Every decision this subscriber's people wrote, oldest first."""
        return self._read({self.decisions_topic: DECISION}, timeout_s)[self.decisions_topic]

    def reviews(self, *, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """The review items no decision of this subscriber answers yet (both topics
        read in one pass: a page shows these on every load)."""
        read = self._read({self.reviews_topic: REVIEW_ITEM, self.decisions_topic: DECISION},
                          timeout_s)
        answered = {d["review_id"] for d in read[self.decisions_topic]}
        return [i for i in _once(read[self.reviews_topic]) if i["review_id"] not in answered]

    def show(self, pseudonym: str, *, timeout_s: float = 10.0) -> dict[str, list[dict[str, Any]]]:
        """The review items and decisions that name ``pseudonym``."""
        return {
            "reviews": [i for i in self.items(timeout_s=timeout_s)
                        if pseudonym in (i["provisional"], i["candidate"])],
            "decisions": [d for d in self.decisions(timeout_s=timeout_s)
                          if pseudonym in (d["pseudonym"], d["other_pseudonym"])],
        }  # fmt: skip

    # -- deciding ---------------------------------------------------------------
    def link(
        self, pseudonym: str, other: str, *, decided_by: str, review_id: str | None = None
    ) -> str:
        """``other`` is the same child as ``pseudonym`` (kept); the decision id."""
        return self._decide("LINK", pseudonym, other, decided_by, review_id)

    def unlink(
        self, pseudonym: str, other: str, *, decided_by: str, review_id: str | None = None
    ) -> str:
        """``other`` was wrongly linked into ``pseudonym``; the decision id."""
        return self._decide("UNLINK", pseudonym, other, decided_by, review_id)

    def keep_apart(
        self, pseudonym: str, other: str, *, decided_by: str, review_id: str | None = None
    ) -> str:
        """``other`` (a review's provisional child) is not ``pseudonym`` (its candidate):
        two children, nothing changes, the review is answered; the decision id."""
        return self._decide("KEEP_APART", pseudonym, other, decided_by, review_id)

    def _decide(
        self, action: str, pseudonym: str, other: str, decided_by: str, review_id: str | None
    ) -> str:
        if not decided_by.strip():
            raise ValueError("decided_by: name the person who decides")
        decision = {
            "decision_id": str(uuid.uuid4()),
            "subscriber_id": self.subscriber,
            "action": action,
            "pseudonym": pseudonym,
            "other_pseudonym": other,
            "decided_by": decided_by.strip(),
            "review_id": review_id,
            "decided_at": self._clock.now_ms(),
        }
        data = self._codec.encode(decision, DECISION)
        self._producer.send(self.decisions_topic, data, key=pseudonym.encode()).get(timeout=30)
        return str(decision["decision_id"])

    def close(self) -> None:
        self._producer.close()


def _once(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first item of each review id: two router instances that met the same two
    children each raise the pair's item (broker/routing/identity_decisions.py), and a
    router replaying a batch after a failure may write an item again."""
    seen: set[str] = set()
    out = []
    for item in items:
        if item["review_id"] not in seen:
            seen.add(item["review_id"])
            out.append(item)
    return out
