"""What one subscriber's workspace knows: its feed, its triage and the clocks,
kept in memory and rebuilt from Kafka at start.

A :class:`FeedStore` follows one subscriber's feed with :class:`broker.api.FeedReader`
(read_committed; a confidential feed opened with the subscriber's keyring) under
a group of its own that never commits, so the subscriber's own reading position
is untouched, and its acknowledgements topic from the beginning (so the triage
shown survives a restart: the topic is the record, memory only a cache). A
:class:`ClockFollower` follows the clock changelog into a
:class:`broker.loop.api.DeadlineBook`. All run on daemon threads; pages read
snapshots under a lock and never wait on Kafka.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from broker.api import FeedReader
from broker.codec import Codec
from broker.kafka.consumer import catch_up, make_consumer
from broker.kafka.structs import Record, TopicPartition
from broker.loop.api import DeadlineBook
from broker.loop.clocks import ClockState
from broker.loop.core import ACKNOWLEDGEMENT, CLOCK_RECORD
from broker.signing.feedkeys import FeedKeyring
from broker.topics import Topics

log = logging.getLogger(__name__)

RAG_FROM_RISK = {"CRITICAL": "RED", "HIGH": "AMBER", "MEDIUM": "AMBER", "LOW": "GREEN"}
RAG_ORDER = {"RED": 0, "AMBER": 1, "GREEN": 2}


def to_ms(value: Any) -> int:
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value or 0)


@dataclass
class Entry:
    """One record of the feed as the workspace shows it."""

    seq: int
    topic: str
    partition: int
    offset: int
    record: dict[str, Any]
    rag: str
    triage: list[dict[str, Any]] = field(default_factory=list)

    @property
    def event(self) -> dict[str, Any]:
        return self.record["event"]  # type: ignore[no-any-return]

    @property
    def decision(self) -> dict[str, Any]:
        return self.record["decision"]  # type: ignore[no-any-return]

    @property
    def event_id(self) -> str:
        return str(self.event["event_id"])

    @property
    def pseudonym(self) -> str | None:
        subject = self.event.get("subject") or {}
        value = subject.get("pseudonym")
        return str(value) if value else None

    @cached_property
    def alert(self) -> tuple[str, int] | None:
        """A pattern alert's ``(alert_id, version)``; None for any other record. Each
        version of an alert is a record of its own (its own event id). Worked out
        once per entry: the queue asks for it several times per entry."""
        payload = self.event.get("payload")
        if not (isinstance(payload, tuple) and payload[0].endswith("PatternAlert")):
            return None
        body = payload[1] or {}
        alert_id = body.get("alert_id")
        return (str(alert_id), int(body.get("version") or 0)) if alert_id else None

    @property
    def reported_ms(self) -> int:
        return to_ms(self.event.get("reported_at"))

    @property
    def occurred_ms(self) -> int:
        return to_ms(self.event.get("occurred_at")) or self.reported_ms


class FeedStore:
    """One subscriber's feed, followed on a thread; ``version`` grows with each record."""

    def __init__(self, bootstrap: str, subscriber: str, topics: Topics, codec: Codec,
                 keyring: FeedKeyring | None = None) -> None:
        self.subscriber = subscriber
        self._lock = threading.Condition()
        self._entries: list[Entry] = []
        self._by_id: dict[str, Entry] = {}
        self._by_pseudonym: dict[str, list[Entry]] = {}  # the child pages' and reviews' index
        self._acks: dict[str, list[dict[str, Any]]] = {}  # by event id, as written
        self._ack_ids: set[str] = set()
        self.error: str | None = None
        self._stop = threading.Event()
        self._reader = FeedReader(
            bootstrap=bootstrap, subscriber=subscriber, codec=codec, topics=topics,
            keyring=keyring,
            group_id=f"{topics.feed_group(subscriber)}.workspace-{uuid.uuid4().hex[:8]}")
        self._thread = threading.Thread(target=self._run, name=f"workspace-{subscriber}",
                                        daemon=True)
        self._thread.start()
        self._ack_follower = TopicFollower(bootstrap, topics.acks(subscriber), self._ack,
                                           f"workspace-acks-{subscriber}")
        self._codec = codec

    @property
    def triage_loaded(self) -> bool:
        """Whether the acknowledgements written before start have been read back."""
        return self._ack_follower.caught_up.is_set()

    @property
    def version(self) -> int:
        return len(self._entries)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                items = self._reader.poll(timeout_ms=200)
                if items:
                    self._add(items)
        except Exception as exc:  # the page says the feed stopped; no content logged
            self.error = type(exc).__name__
            log.warning("workspace feed of %s stopped: %s", self.subscriber, self.error)
        finally:
            self._reader.close()

    def _add(self, items: list[Any]) -> None:
        with self._lock:
            for it in items:
                if it.is_identity_notice:  # links are folded from the audit log (links.py)
                    continue
                event = it.record["event"]
                if event["event_id"] in self._by_id:
                    continue
                e = Entry(len(self._entries), it.topic, it.partition, it.offset, it.record,
                          RAG_FROM_RISK.get(str(event.get("risk_level")), "AMBER"))
                self._entries.append(e)
                self._by_id[e.event_id] = e
                if (pseudonym := e.pseudonym) is not None:
                    self._by_pseudonym.setdefault(pseudonym, []).append(e)
                for ack in self._acks.get(e.event_id, ()):
                    _apply(e, ack)
            self._lock.notify_all()

    def add_records(self, records: list[tuple[str, int, int, dict[str, Any]]]) -> None:
        """Add records directly (benchmarks and tests of rendering)."""

        @dataclass
        class _It:
            topic: str
            partition: int
            offset: int
            record: dict[str, Any]
            is_identity_notice: bool = False

        self._add([_It(*r) for r in records])

    def wait_beyond(self, version: int, timeout_s: float) -> int:
        with self._lock:
            self._lock.wait_for(lambda: len(self._entries) > version, timeout=timeout_s)
            return len(self._entries)

    def since(self, version: int) -> list[Entry]:
        with self._lock:
            return list(self._entries[version:])

    def get(self, event_id: str) -> Entry | None:
        with self._lock:
            return self._by_id.get(event_id)

    def entries(self) -> list[Entry]:
        with self._lock:
            return list(self._entries)

    def chronology(self, pseudonyms: str | frozenset[str]) -> list[Entry]:
        """Every record of this feed about the child (one pseudonym, or every
        pseudonym of a linked child), in the order things happened."""
        wanted = frozenset({pseudonyms}) if isinstance(pseudonyms, str) else pseudonyms
        with self._lock:
            found = [e for p in wanted for e in self._by_pseudonym.get(p, ())]
        return sorted(found, key=lambda e: (e.occurred_ms, e.seq))

    def holds(self, pseudonym: str) -> bool:
        """Whether this feed has a record about ``pseudonym`` (without listing them)."""
        with self._lock:
            return pseudonym in self._by_pseudonym

    def acknowledged(self, ack: dict[str, Any]) -> None:
        """Show an acknowledgement this process just wrote (the follower skips it later)."""
        with self._lock:
            if ack["ack_id"] in self._ack_ids:
                return
            self._ack_ids.add(ack["ack_id"])
            self._acks.setdefault(ack["event_id"], []).append(ack)
            e = self._by_id.get(ack["event_id"])
            if e is not None:
                _apply(e, ack)

    def _ack(self, r: Record) -> None:
        if r.value:
            self.acknowledged(self._codec.decode(r.value, ACKNOWLEDGEMENT))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._ack_follower.close()


def _apply(e: Entry, ack: dict[str, Any]) -> None:
    """An acknowledgement as the concern shows it: a TRIAGE sets the RAG rating."""
    if ack["kind"] not in ("TRIAGE", "DECISION", "OUTCOME", "REVIEWED"):
        return  # RECEIVED and the like are the router's and loop's business
    if ack["kind"] == "TRIAGE" and ack.get("rag"):
        e.rag = str(ack["rag"])
    e.triage.append({"kind": ack["kind"], "by": ack["actor"], "rag": ack.get("rag"),
                     "outcome": ack.get("outcome"), "note": ack.get("note"),
                     "at_ms": to_ms(ack.get("acknowledged_at"))})


class TopicFollower:
    """Every partition of ``topic`` from the beginning, each record to ``handle``,
    on a daemon thread (waits for the topic to exist); ``caught_up`` is set once
    what was there at start has been read."""

    def __init__(self, bootstrap: str, topic: str, handle: Callable[[Record], object],
                 name: str) -> None:
        self.caught_up = threading.Event()
        self._stop = threading.Event()
        self._consumer = make_consumer(bootstrap, group_id=None, topics=None)
        self._topic = topic
        self._handle = handle
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _assign(self) -> list[TopicPartition]:
        parts = self._consumer.partitions_for_topic(self._topic) or set()
        tps = [TopicPartition(self._topic, p) for p in sorted(parts)]
        if tps:
            self._consumer.assign(tps)
            self._consumer.seek_to_beginning(*tps)
        return tps

    def _run(self) -> None:
        try:
            tps: list[TopicPartition] = []
            while not self._stop.is_set() and not (tps := self._assign()):
                self._stop.wait(1.0)
            while not self._stop.is_set() and catch_up(self._consumer, tps, self._handle,
                                                       timeout_s=1.0):
                pass
            self.caught_up.set()
            while not self._stop.is_set():
                for r in self._consumer.poll_records(timeout_ms=200):
                    self._handle(r)
        except Exception as exc:
            log.warning("workspace follower of a topic stopped: %s", type(exc).__name__)
        finally:
            self._consumer.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class ClockFollower:
    """The clock changelog, followed on a thread into a DeadlineBook."""

    def __init__(self, bootstrap: str, topics: Topics, codec: Codec) -> None:
        self.book = DeadlineBook()
        self._events_of: dict[str, set[str]] = {}
        self._lock = threading.Lock()
        self._codec = codec
        self._follower = TopicFollower(bootstrap, topics.clocks, self._add, "workspace-clocks")

    def _add(self, r: Record) -> None:
        if r.value:
            with self._lock:
                self.book.add(self._codec.decode(r.value, CLOCK_RECORD))
                self._events_of.clear()

    def for_event(self, event_id: str, owner: str) -> list[ClockState]:
        with self._lock:
            return [h[-1] for h in self.book.for_event(event_id) if h[-1].owner == owner]

    def events_of(self, owner: str) -> set[str]:
        """The event ids ``owner`` has a clock for (cached until the next change)."""
        with self._lock:
            got = self._events_of.get(owner)
            if got is None:
                got = self._events_of[owner] = {h[-1].event_id for h in self.book.history.values()
                                                if h[-1].owner == owner}
            return got

    def close(self) -> None:
        self._follower.close()


Closer = Callable[[], None]
