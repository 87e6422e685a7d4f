"""One polled batch, one Kafka transaction: route it, send everything, commit or undo.

Exactly once, fail closed (docs/DESIGN.md): every subscriber copy, every quarantine
record, the batch's audit leaves and the consumer offsets are written in a
single Kafka transaction. A share and its audit record commit together or not
at all. :class:`Transactions` is a part of
:class:`~broker.routing.service.RouterService`, which owns the producer and the
state declared here.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from broker.kafka.exceptions import KafkaError, ProducerFencedError
from broker.kafka.producer import Producer, SendFuture, Sent, make_producer
from broker.kafka.structs import GroupMetadata, OffsetAndMetadata, Record, TopicPartition
from broker.routing._records import _describe, _inbound, _span, _where
from broker.routing.core import Routed, RoutingCore
from broker.routing.identity_decisions import pair_reviews
from broker.routing.metrics import RouterMetrics
from broker.topics import Topics

log = logging.getLogger(__name__)

#: Records are sent when a batch fills or when the transaction is flushed before
#: its commit, not one produce request per record (kafka-python's linger_ms=0):
#: a transaction's records leave in a few large batches. Latency is unaffected,
#: as every transaction ends with a flush. The linger is longer than any
#: transaction, so the sender thread stays asleep while a batch is routed
#: instead of taking the GIL and the accumulator's locks to send partial
#: batches (figures: docs/PERFORMANCE.md). Batches stay below the broker's
#: default message.max.bytes (1 MiB).
PRODUCER_LINGER_MS = 5000
PRODUCER_BATCH_BYTES = 256 * 1024
#: Each step of a transaction (flush, offsets, commit, abort) waits this long
#: for the broker; then the transaction is given up (and the batch replayed).
TRANSACTION_WAIT_S = 30.0
#: kafka-python's transaction timeout (its default): the broker aborts an
#: abandoned transaction after this long.
TRANSACTION_TIMEOUT_MS = 60_000
#: A router's producer gives up connecting or blocking on metadata after this
#: (kafka-python: 30 and 60 s), so a stop is never held up longer.
PRODUCER_BLOCK_MS = 10_000


@dataclass
class RouterStats:
    consumed: int = 0
    shared: int = 0
    withheld: int = 0
    quarantined: int = 0
    duplicates: int = 0
    transactions: int = 0
    aborted: int = 0
    """Transactions that failed and were rolled back (their batches replayed)."""
    producer_restarts: int = 0
    fenced: bool = False
    """True if the loop stopped because another producer took over our transactional id."""
    last_commit_ms: int = 0
    per_agency: dict[str, int] = field(default_factory=dict)


@dataclass
class _Open:
    """A transaction in progress: its batch routed and sent, not yet committed."""

    batches: dict[TopicPartition, list[Record]]
    mark: int
    """:meth:`SeenEvents.mark` before the batch: what to forget if it aborts."""
    started: float
    routed: list[Routed] = field(default_factory=list)
    leaves: list[bytes] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)
    """Coordinates of each routed record, for debug lines (empty unless debugging)."""
    futures: list[SendFuture] = field(default_factory=list)
    """The audit batches' sends."""
    copies: Sent | None = None
    """The feed copies' sends (checked per Kafka batch: :meth:`Producer.send_all`)."""
    offsets_sent: Callable[..., None] | None = None


#: Frames a batch's audit leaves (their bytes) as audit topic messages.
AuditEncoder = Callable[[list[bytes]], list[bytes]]


class Transactions:
    """Route, send and commit one batch in one transaction, or undo it."""

    core: RoutingCore
    topics: Topics
    instance_id: str
    stats: RouterStats
    metrics: RouterMetrics
    _bootstrap: str
    _client_config: dict[str, Any]
    _transactional_id: str
    _producer: Producer | None
    _audit_encoder: AuditEncoder
    _audit_headers: list[tuple[str, bytes]]
    _on_batch: Callable[[list[Routed]], None] | None
    _last_commit_at: float | None
    _replay_pending: bool
    _need_rewind: bool
    _need_producer: bool
    _stop: threading.Event
    _transaction_wait_s: float
    _open_since: float | None
    _abandoned: str
    _quarantined_logged: int

    def _repair(self) -> None:
        raise NotImplementedError

    def _note_failure(self, exc: BaseException) -> None:
        raise NotImplementedError

    def _new_writer_token(self) -> None:
        raise NotImplementedError

    def _new_producer(self) -> Producer:
        producer = make_producer(
            self._bootstrap,
            transactional_id=self._transactional_id,
            client_id=f"safeshare-router-{self.instance_id}",
            linger_ms=PRODUCER_LINGER_MS,
            batch_size=PRODUCER_BATCH_BYTES,
            # A replacement made while the broker is away gives up within these,
            # so a stop is never held up longer (the loop retries with back-off).
            max_block_ms=PRODUCER_BLOCK_MS,
            **{"bootstrap_timeout_ms": PRODUCER_BLOCK_MS, **self._client_config},
        )
        producer.interrupt = self._stop
        try:
            producer.init_transactions()  # fences (and aborts) an older one with our id
        except BaseException:
            _close_quietly(producer, timeout=0)
            raise
        return producer

    def _start(
        self, batches: dict[TopicPartition, list[Record]], group: GroupMetadata
    ) -> _Open:
        """Open a transaction for a polled batch: route it, send every record and
        the batch's offsets. :meth:`_finish` commits it."""
        producer = self._producer
        assert producer is not None
        seen = self.core.seen_event_ids
        # Consent partitions first: an event polled with a consent record is decided
        # with it (broker.routing.core._handle_consent). The batch keeps this order
        # everywhere (routing, logging), so its records and their results line up.
        # Link/unlink decisions too: an event polled with one follows it.
        first = (self.topics.consent_prefix, self.topics.identity_decisions_prefix)
        batches = dict(
            sorted(batches.items(), key=lambda item: not item[0].topic.startswith(first))
        )
        txn = _Open(batches, seen.mark(), time.monotonic())
        self._open_since = txn.started
        self.core.begin_consents()
        try:
            producer.begin_transaction()
            # The batch's offsets are known now: on their way to the coordinators
            # while the batch is routed (waited for before the commit); an abort
            # discards them with everything else.
            offsets = {
                tp: OffsetAndMetadata(records[-1].offset + 1, "", -1)
                for tp, records in batches.items()
                if records
            }
            txn.offsets_sent = (producer.start_sending_offsets(offsets, group) if offsets
                                else lambda timeout=None: None)
            send = producer.send
            handle = self.core.handle
            debug = log.isEnabledFor(logging.DEBUG)
            routed_all, leaves, wheres, futures = txn.routed, txn.leaves, txn.wheres, txn.futures
            outputs: list[tuple[str, bytes | None, bytes | None]] = []  # Outbound tuples
            for records in batches.values():
                for r in records:
                    routed = handle(_inbound(r))
                    if debug:
                        wheres.append(_where(r))
                    leaves.extend(routed.leaves)
                    outputs.extend(routed.outputs)
                    routed_all.append(routed)
            # Review items for children two instances named twice (learned since the
            # last transaction; taken back with the rest if this one aborts).
            raised, raised_leaves = pair_reviews(self.core)
            leaves.extend(raised_leaves)
            # Sent after the whole batch is routed, in one run: the client's
            # send path stays hot in the CPU caches instead of alternating with
            # routing (cheaper per record). Nothing leaves before
            # the flush anyway (the producer lingers longer than a transaction).
            outputs.extend(raised)
            txn.copies = producer.send_all(outputs)
            for payload in self._audit_encoder(leaves):
                futures.append(send(self.topics.audit, payload, headers=self._audit_headers))
        except BaseException as exc:
            self._abandon(txn, exc)
            raise
        return txn

    def _finish(self, txn: _Open) -> None:
        """Commit an open transaction once all its records are acknowledged."""
        producer = self._producer
        assert producer is not None
        try:
            # Every record must be acknowledged before the commit: a copy or an
            # audit batch the broker refused fails the whole transaction here,
            # whatever the client library would make of it at commit time.
            assert txn.offsets_sent is not None
            wait = self._transaction_wait_s
            producer.flush(timeout=wait)
            if txn.copies is not None:
                txn.copies.raise_if_failed()
            for fut in txn.futures:
                fut.raise_if_failed()
            txn.offsets_sent(wait)
            producer.commit_transaction(timeout=wait)
        except BaseException as exc:
            self._abandon(txn, exc)
            raise
        self._committed(txn)

    def _process(
        self, batches: dict[TopicPartition, list[Record]], group: GroupMetadata
    ) -> None:
        """Route, send and commit one batch: one transaction."""
        self._finish(self._start(batches, group))

    def _abandon(self, txn: _Open, exc: BaseException) -> None:
        """Undo a transaction that failed (before or at its commit); re-raised by the caller.

        The event ids it marked as routed are forgotten, the transaction is
        aborted (or the producer replaced), and the consumer is to go back to
        the committed offsets, so the batch is polled again.
        """
        producer = self._producer
        assert producer is not None
        forgotten = self.core.seen_event_ids.forget_since(txn.mark)
        self.core.rollback_consents()
        # The transaction may have committed all the same (a commit the broker
        # applied but whose answer was lost): then its offsets went with it, the
        # batch is not replayed, and the forgotten ids (and the consent records
        # taken back) come back only from the audit log. A new writer token
        # makes this process read its earlier batches back in full, like
        # another instance's.
        self._new_writer_token()
        self._replay_pending = True
        self.stats.aborted += 1
        self.metrics.txn_aborted.inc()
        self._need_rewind = True
        self._open_since = None
        self._abandoned = _span(txn.batches)
        if isinstance(exc, KafkaError):
            self._note_failure(exc)
        if isinstance(exc, ProducerFencedError):
            return  # a fenced producer may not even abort
        if isinstance(exc, KafkaError):
            # Said once per condition by _failed, which the loop calls next.
            log.debug(
                "router %s: transaction for %s failed (%s); aborting, %d event id(s) "
                "marked unrouted", self.instance_id, self._abandoned, _describe(exc), forgotten,
            )
        else:
            log.error(
                "router %s: transaction for %s failed (%s); aborting it: the batch is "
                "replayed by the next router to run", self.instance_id, self._abandoned,
                _describe(exc),
            )
        try:
            # Bounded, and cut short by a stop: a broker that does not answer
            # aborts the transaction itself (see close()).
            producer.abort_transaction(timeout=self._transaction_wait_s)
        except ProducerFencedError:
            raise
        except Exception as abort_exc:  # noqa: BLE001 - replaced by a new producer instead
            log.debug(
                "router %s: abort failed (%s); the producer will be replaced, which "
                "aborts the transaction on the broker", self.instance_id, _describe(abort_exc),
            )
            self._need_producer = True
        # The rest (a new producer, the rewind) is done by the loop's next pass,
        # after _failed has noted the failure and waited.

    def _committed(self, txn: _Open) -> None:
        self._open_since = None
        now = time.monotonic()
        self._last_commit_at = now
        self.metrics.txn_duration.observe(now - txn.started)
        self.metrics.audit_leaves.inc(len(txn.leaves))
        routed_all = txn.routed
        self._account(routed_all)
        if self.stats.quarantined != self._quarantined_logged:
            # Logged once committed: a batch replayed after a failure would
            # otherwise say it again each time it is routed.
            self._log_quarantined(txn)
        if txn.wheres:  # debug logging is on
            for where, r in zip(txn.wheres, routed_all, strict=True):
                log.debug(
                    "router %s: %s event=%s shared=%s withheld=%s quarantined=%s%s",
                    self.instance_id, where, r.event_id or "-", ",".join(r.shared) or "-",
                    ",".join(f"{sub}:{why}" for sub, why in r.withheld) or "-",
                    r.quarantined or "-", " duplicate" if r.duplicate else "",
                )
            log.debug(
                "router %s: committed %s: %d record(s), %d leaves",
                self.instance_id, _span(txn.batches), len(routed_all), len(txn.leaves),
            )
        if self._on_batch is not None and routed_all:
            self._on_batch(routed_all)

    def _log_quarantined(self, txn: _Open) -> None:
        self._quarantined_logged = self.stats.quarantined
        records = (r for recs in txn.batches.values() for r in recs)
        for r, routed in zip(records, txn.routed, strict=True):
            if routed.quarantined is not None:
                log.warning(
                    "router %s: quarantined %s reason=%s event=%s", self.instance_id,
                    _where(r), routed.quarantined, routed.event_id or "-",
                )

    def _account(self, routed_all: list[Routed]) -> None:
        """Count a committed batch: tallied here, then one metric update per label set
        (a labelled metric update takes a lock: once per label set, not per event)."""
        s, m = self.stats, self.metrics
        s.transactions += 1
        s.last_commit_ms = now = self.core.clock.now_ms()
        m.last_commit.set(now / 1000)
        consumed: Counter[str] = Counter()
        shared: Counter[str] = Counter()
        withheld: Counter[tuple[str, str]] = Counter()
        quarantined: Counter[str] = Counter()
        duplicates = 0
        observe = m.latency.observe
        for r in routed_all:
            consumed[r.agency or "unknown"] += 1
            for sub in r.shared:
                shared[sub] += 1
            for pair in r.withheld:
                withheld[pair] += 1
            if r.quarantined is not None:
                quarantined[r.quarantined] += 1
            if r.duplicate:
                duplicates += 1
            if r.shared and r.reported_at_ms is not None:
                observe(max(0.0, (now - r.reported_at_ms) / 1000))
            if r.agency:
                s.per_agency[r.agency] = s.per_agency.get(r.agency, 0) + 1
        for agency, n in consumed.items():
            m.consumed.labels(agency).inc(n)
        for sub, n in shared.items():
            m.shared.labels(sub).inc(n)
        for (sub, reason), n in withheld.items():
            m.withheld.labels(sub, reason).inc(n)
        for reason, n in quarantined.items():
            m.quarantined.labels(reason).inc(n)
        if duplicates:
            m.duplicates.inc(duplicates)
        s.consumed += len(routed_all)
        s.shared += shared.total()
        s.withheld += withheld.total()
        s.quarantined += quarantined.total()
        s.duplicates += duplicates


def _close_quietly(producer: Producer, timeout: float = 10.0) -> None:
    try:
        producer.close(timeout=timeout)
    except Exception:  # noqa: BLE001 - closing a broken producer; nothing more to do
        log.debug("closing producer failed", exc_info=True)
