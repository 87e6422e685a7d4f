"""The public Python API: what agency systems and subscribers import.

Agency systems publish concern events::

    from broker.api import Publisher
    with Publisher(bootstrap="localhost:9092", agency="devon-cornwall-police") as pub:
        receipt = pub.publish_json(event_as_json)

Subscribers read their own feed::

    from broker.api import FeedReader
    with FeedReader(bootstrap="localhost:9092", subscriber="torbay-mash") as feed:
        for item in feed.poll(timeout_ms=1000):
            if item.is_identity_notice:  # two pseudonyms are one child, or two again
                print(item.record["action"], item.record["other_record_key"])
            else:
                print(item.record["event"]["summary"])

A deciding subscriber's people link and unlink children (docs/IDENTITY.md)::

    from broker.api import IdentityDesk
    with IdentityDesk(bootstrap="localhost:9092", subscriber="torbay-mash") as desk:
        for item in desk.reviews():
            desk.link(item["candidate"], item["provisional"], decided_by="A. Worker",
                      review_id=item["review_id"])

The ``safeshare`` CLI is built on exactly these classes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from broker.clock import Clock
from broker.codec import Codec
from broker.codec.exceptions import EncodingError
from broker.identity.desk import IdentityDesk
from broker.intake import EventRefused, Intake, check_source
from broker.kafka.consumer import make_consumer
from broker.kafka.producer import SendFuture, make_producer
from broker.kafka.structs import Closeable
from broker.loop.api import Acknowledger, AckReceipt, DeadlineBook
from broker.policy import Policy
from broker.policy.consent import consent_key
from broker.signing import AgencySigner
from broker.signing.feedkeys import FeedKeyring
from broker.signing.feeds import FeedDecryptionError, feed_schema, is_sealed
from broker.topics import DEFAULT, Topics

__all__ = [
    "AckReceipt",
    "Acknowledger",
    "DeadlineBook",
    "EncodingError",
    "EventRefused",
    "FeedItem",
    "FeedReader",
    "IdentityDesk",
    "Intake",
    "Publisher",
    "Receipt",
    "check_source",
]

ENVELOPE = "safeshare.ConcernEvent"
FEED_RECORD = "safeshare.FeedRecord"
IDENTITY_NOTICE = "safeshare.IdentityNotice"
CONSENT_RECORD = "safeshare.ConsentRecord"


@dataclass(frozen=True)
class Receipt:
    """Where a published event landed."""

    event_id: str
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class FeedItem:
    """One minimised event as a subscriber receives it, with its Kafka coordinates;
    or an identity notice (``schema`` is ``safeshare.IdentityNotice``): a person
    linked the child of ``other_record_key`` into the child of ``record_key``
    (LINK) or split them again (UNLINK) -- see broker/routing/identity_notices.py."""

    topic: str
    partition: int
    offset: int
    key: str | None
    record: dict[str, Any]
    sealed_with: str | None = None
    """On a confidential feed, the id of the subscriber's feed key that opened it."""
    schema: str = FEED_RECORD
    """What ``record`` is: a FeedRecord, or an IdentityNotice."""

    @property
    def is_identity_notice(self) -> bool:
        return self.schema == IDENTITY_NOTICE

    @property
    def where(self) -> str:
        return f"{self.topic}[{self.partition}]@{self.offset}"


class Publisher(Closeable):
    """Publishes an agency's concern events to its own ingest topic.

    Every event passes :class:`broker.intake.Intake` before anything is sent:
    the schema, the one size limit (:data:`broker.codec.MAX_EVENT_BYTES`) and,
    given the ``policy`` the router runs, the agency's registration and the
    signature it requires; with ``signer`` (the agency's Ed25519 key) every
    event is signed (broker.signing). A refused event raises
    :class:`EncodingError` naming the field, and nothing reaches Kafka. The
    record key is the subject's pseudonym, so one child's events stay in order
    on one partition.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        agency: str,
        codec: Codec | None = None,
        topics: Topics = DEFAULT,
        producer_config: Mapping[str, Any] | None = None,
        signer: AgencySigner | None = None,
        policy: Policy | None = None,
        clock: Clock | None = None,
        intake: Intake | None = None,
    ) -> None:
        self.intake = intake or Intake(
            agency=agency, codec=codec, signer=signer, policy=policy, clock=clock
        )
        if self.intake.agency != agency:
            raise ValueError(f"intake is for agency {self.intake.agency!r}, not {agency!r}")
        self.agency = agency
        self.topic = topics.ingest(agency)
        self._consent_topic = topics.consent(agency)
        self._codec = self.intake.codec
        self._producer = make_producer(bootstrap, **dict(producer_config or {}))

    def encode(self, event: Mapping[str, Any]) -> bytes:
        """Check ``event`` (in-memory shape) and return its wire bytes (:class:`Intake`)."""
        return self.intake.encode(event)

    def destination(self, event: Mapping[str, Any]) -> tuple[str, bytes | None]:
        """Topic and key for ``event``.

        Concern events go to the agency's ingest topic keyed by the subject's
        pseudonym; consent records go to the agency's own consent topic keyed by
        subject and purpose, so one child's records for a purpose stay in order.
        """
        subject = (event.get("subject") or {}).get("pseudonym")
        payload = event.get("payload")
        if isinstance(payload, tuple) and payload[0] == CONSENT_RECORD:
            return self._consent_topic, consent_key(subject or "", payload[1]["purpose"])
        return self.topic, subject.encode() if subject else None

    def publish(self, event: Mapping[str, Any], *, timeout_s: float = 30.0) -> Receipt:
        """Check and publish one event; block until the broker acknowledges it."""
        return self.send(event, self.encode(event), timeout_s=timeout_s)

    def send(self, event: Mapping[str, Any], data: bytes, *, timeout_s: float = 30.0,
             headers: Sequence[tuple[str, bytes]] | None = None) -> Receipt:
        """Publish ``data``, the bytes :meth:`encode` made of ``event``; block until
        the broker acknowledges it. For a caller that checks a batch first and
        sends only if every event passed (``safeshare publish``); ``headers``
        travel with the record (the gateway's request id, broker.gateway.recall)."""
        return self.receipt(event, self.start(event, data, headers=headers), timeout_s=timeout_s)

    def start(self, event: Mapping[str, Any], data: bytes, *,
              headers: Sequence[tuple[str, bytes]] | None = None) -> SendFuture:
        """:meth:`send` without waiting for the acknowledgement: the record's
        future (:meth:`receipt` waits for it). May wait for the topic's metadata."""
        topic, key = self.destination(event)
        return self._producer.send(topic, data, key=key, headers=headers)

    def start_now(self, event: Mapping[str, Any], data: bytes, *,
                  headers: Sequence[tuple[str, bytes]] | None = None) -> SendFuture | None:
        """:meth:`start` if it needs no wait at all, else None (for an event loop,
        which then calls :meth:`start` from a thread)."""
        topic, key = self.destination(event)
        if key is None:
            return None
        return self._producer.send_now(topic, data, key=key, headers=headers)

    @staticmethod
    def receipt(event: Mapping[str, Any], future: SendFuture, *,
                timeout_s: float = 30.0) -> Receipt:
        """The receipt of ``event`` sent as ``future``, once acknowledged (raises
        why not: the broker refused it, or no answer in ``timeout_s``)."""
        meta = future.get(timeout=timeout_s)
        return Receipt(str(event["event_id"]), meta.topic, meta.partition, meta.offset)

    @property
    def broken(self) -> bool:
        """The producer will send nothing more after a record the broker refused
        for good (:attr:`broker.kafka.producer.Producer.broken`): make a new Publisher."""
        return self._producer.broken

    def publish_json(self, obj: Any, *, timeout_s: float = 30.0) -> Receipt:
        """Like :meth:`publish`, for an event in its JSON form."""
        return self.publish(self._codec.from_json(obj, ENVELOPE), timeout_s=timeout_s)

    def flush(self) -> None:
        self._producer.flush()

    def close(self) -> None:
        self._producer.close()


class FeedReader(Closeable):
    """Reads one subscriber's feed, committed records only (``read_committed``).

    Each subscriber reads with its own consumer group, so its position survives
    restarts; ``commit()`` records that the items returned so far were handled.
    A confidential feed (the subscriber registered HPKE feed keys) is opened
    with ``keyring``, the subscriber's private feed keys (old ones too: each
    record names its key); without it reading fails rather than returning
    nothing, and a record that does not open raises :class:`FeedDecryptionError`.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        subscriber: str,
        codec: Codec | None = None,
        topics: Topics = DEFAULT,
        group_id: str | None = None,
        consumer_config: Mapping[str, Any] | None = None,
        keyring: FeedKeyring | None = None,
    ) -> None:
        if keyring is not None and keyring.subscriber != subscriber:
            raise ValueError(f"feed keyring is for {keyring.subscriber!r}, not {subscriber!r}")
        self.subscriber = subscriber
        self._opener = keyring.opener() if keyring is not None else None
        self.topic = topics.feed(subscriber)
        self._codec = codec or Codec.default()
        self._consumer = make_consumer(
            bootstrap,
            group_id=group_id or topics.feed_group(subscriber),
            topics=[self.topic],
            isolation_level="read_committed",
            **dict(consumer_config or {}),
        )

    def poll(self, timeout_ms: int = 1000, max_records: int | None = None) -> list[FeedItem]:
        """Return the next decoded feed items (possibly none)."""
        return [
            FeedItem(
                r.topic,
                r.partition,
                r.offset,
                r.key.decode() if r.key is not None else None,
                *self._record(r.value or b""),
            )
            for r in self._consumer.poll_records(timeout_ms=timeout_ms, max_records=max_records)
        ]

    def _record(self, value: bytes) -> tuple[dict[str, Any], str | None, str]:
        """The FeedRecord or IdentityNotice, the id of the key that opened it if it
        was sealed, and which of the two it is."""
        if not is_sealed(self._codec, value):
            schema = feed_schema(self._codec, value)
            return self._codec.decode(value, schema), None, schema
        if self._opener is None:
            raise FeedDecryptionError(
                f"the feed of {self.subscriber!r} is encrypted: pass the subscriber's feed keyring"
            )
        outer, record, schema = self._opener.open_typed(self._codec, value)
        return record, outer["key_id"], schema

    def __iter__(self) -> Iterator[FeedItem]:
        while True:
            yield from self.poll()

    def commit(self) -> None:
        self._consumer.commit()

    def close(self) -> None:
        self._consumer.close()
