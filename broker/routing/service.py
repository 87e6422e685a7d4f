"""The router service: consume, decide, and write feeds + audit + offsets in one transaction.

Exactly once, fail closed (docs/DESIGN.md): the router reads ingest topics with
``read_committed`` as one consumer group, and for each polled batch writes every
subscriber copy, every quarantine record, the batch's audit leaves and the
consumer offsets in a single Kafka transaction. A share and its audit record
commit together or not at all.

Riding out broker trouble. When a transaction fails with a Kafka error (broker
restarting, leader moving, a rebalance that fenced our offsets, a record the
broker refused) the service:

1. forgets the event ids the batch marked as routed
   (:meth:`SeenEvents.forget_since`): they never reached the audit log, and
   on replay they must be routed, not flagged as duplicates. Consent state
   needs no undo: only the consent follower changes it, from committed records;
2. aborts the transaction; if the producer cannot abort (it is in a fatal
   state, or the broker does not answer) it is closed and a new one with the
   same transactional id is made, whose ``init_transactions`` aborts the open
   transaction on the broker (KIP-98);
3. moves the consumer back to the committed offsets
   (:meth:`Consumer.rewind_to_committed`) so the batch is polled again, by
   this instance or, after a rebalance, by the new owner of its partitions;
4. waits (capped exponential backoff) and carries on. ``/healthz`` turns 503
   while this lasts more than :data:`HEALTH_STALE_S`.

Nothing is shared meanwhile, because nothing commits. Two errors stop the loop
instead: :class:`ProducerFencedError` (another process took over our
transactional id — a restarted instance fencing this zombie — so this one
must not write again) stops it cleanly, and an error that is not Kafka's
(a defect, an audit leaf that cannot be built) aborts and propagates: fail
closed, the batch is replayed by whichever router runs next.

Several instances share the ingest partitions as one consumer group. The
offsets are committed with the consumer's group metadata taken right after
the poll that returned the batch (KIP-447): if a rebalance moved a partition
to another instance meanwhile, the broker refuses the offsets, the
transaction aborts and the new owner replays the batch. Instances on one host
must be given distinct ``instance_id`` values; a restarted instance must keep
its id, so it fences its own zombie.

State followed by every instance, each on its own group-less consumer:

- consent: the compacted consent topic from the beginning, caught up after
  each poll and before its batch is routed, so a consent record committed
  before an event is applied to it;
- the audit topic: every routed event id (so a repeated event is not shared
  twice, whichever instance routed it first) and the number of committed
  leaves per shard; and the checkpoints topic: the size of the newest signed
  checkpoint per shard. Their difference is the audit checkpoint lag.

Log lines carry ``topic[partition]@offset`` and event ids, never anything
about a child.
"""

from __future__ import annotations

import logging
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.audit.exceptions import AuditError
from broker.audit.leaf import batch_size, decode_batch
from broker.kafka.consumer import Consumer, catch_up, make_consumer
from broker.kafka.exceptions import KafkaError, ProducerFencedError
from broker.kafka.producer import Producer, SendFuture, Sent, make_producer
from broker.kafka.structs import GroupMetadata, OffsetAndMetadata, Record, TopicPartition
from broker.routing.core import Inbound, Routed, RoutingCore
from broker.routing.metrics import HealthServer, RouterMetrics
from broker.topics import Topics

log = logging.getLogger(__name__)

#: /healthz turns 503 when the loop has not polled, or transactions have kept
#: failing, for this long.
HEALTH_STALE_S = 30.0
#: How often the consumer lag gauge is refreshed (one ListOffsets round trip).
LAG_INTERVAL_S = 5.0
#: Backoff between attempts after a failed transaction: doubles from the first
#: value up to the second.
RETRY_BACKOFF_S = (0.2, 5.0)
#: A dead router's partitions move to the others after this long (the broker's
#: minimum is 6 s; kafka-python's default of 45 s would stall them for long).
SESSION_TIMEOUT_MS = 10_000
HEARTBEAT_INTERVAL_MS = 3_000
MAX_POLL_INTERVAL_MS = 300_000  # kafka-python's and Kafka's default
#: kafka-python backs off reconnecting up to 30 s; after a broker restart that
#: left the router idle for 15 s more (measured). The Java clients' default.
RECONNECT_BACKOFF_MAX_MS = 1_000
#: Records are sent when a batch fills or when the transaction is flushed before
#: its commit, not one produce request per record (kafka-python's linger_ms=0):
#: a transaction's records leave in a few large batches. Measured: ~2x router
#: throughput. Latency is unaffected, as every transaction ends with a flush.
#: The linger is longer than any transaction, so the sender thread stays asleep
#: while a batch is routed (at 100 ms it woke to send partial batches, taking
#: the GIL and the accumulator's locks from the routing thread): in-process
#: router 801 -> 1,365 events/s (/tmp/phase_router.py, 8,000 events).
#: Batches stay below the broker's default message.max.bytes (1 MiB).
PRODUCER_LINGER_MS = 5000
PRODUCER_BATCH_BYTES = 256 * 1024
#: Header on the router's audit batches: a random token of the writing process.
AUDIT_WRITER_HEADER = "safeshare-router-writer"


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
    leaves: list[Mapping[str, Any]] = field(default_factory=list)
    wheres: list[str] = field(default_factory=list)
    """Coordinates of each routed record, for debug lines (empty unless debugging)."""
    futures: list[SendFuture] = field(default_factory=list)
    """The audit batches' sends."""
    copies: Sent | None = None
    """The feed copies' sends (checked per Kafka batch: :meth:`Producer.send_all`)."""
    offsets_sent: Callable[[], None] | None = None


AuditEncoder = Callable[[list[Mapping[str, Any]]], list[bytes]]


class RouterService:
    """Runs :class:`RoutingCore` against Kafka, transactionally. See the module docstring."""

    def __init__(
        self,
        *,
        bootstrap: str,
        core: RoutingCore,
        topics: Topics,
        instance_id: str,
        audit_encoder: AuditEncoder,
        max_batch: int = 1000,
        poll_timeout_ms: int = 200,
        on_batch: Callable[[list[Routed]], None] | None = None,
        metrics: RouterMetrics | None = None,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
        retry_backoff_s: tuple[float, float] = RETRY_BACKOFF_S,
        max_poll_interval_ms: int = MAX_POLL_INTERVAL_MS,
        client_config: Mapping[str, Any] | None = None,
    ) -> None:
        """``max_poll_interval_ms``: an instance that has not polled for this long
        (a batch that takes longer, a stalled process) is put out of the group and
        its partitions move on; its late offsets are then refused (KIP-447).
        ``client_config``: extra kafka-python settings for every client (e.g. security)."""
        self._max_poll_interval_ms = max_poll_interval_ms
        self.core = core
        self.topics = topics
        self.instance_id = instance_id
        self.stats = RouterStats()
        self.metrics = metrics or RouterMetrics()
        self._bootstrap = bootstrap
        self._client_config = {
            "reconnect_backoff_max_ms": RECONNECT_BACKOFF_MAX_MS,
            **(client_config or {}),
        }
        self._transactional_id = topics.router_transactional_id(instance_id)
        # Marks the audit batches this process writes, so that reading the audit
        # topic back it can skip the leaves of its own (their event ids are
        # already noted). Random per process: a successor with the same
        # instance id must read its predecessor's leaves in full.
        self._new_writer_token()
        self._audit_caught_up_for: set[TopicPartition] | None = None
        self._audit_encoder = audit_encoder
        self._max_batch = max_batch
        self._poll_timeout_ms = poll_timeout_ms
        self._on_batch = on_batch
        self._retry_backoff_s = retry_backoff_s
        self._stop = threading.Event()

        # Health and lag bookkeeping.
        self._last_poll = time.monotonic()
        self._last_commit_at: float | None = None
        self._failing_since: float | None = None
        self._failures = 0
        # A transaction failed and nothing has been committed since: the loop is
        # not healthy again until it commits, or has nothing left to commit.
        self._replay_pending = False
        self._last_error = ""
        self._lag_at = float("-inf")
        self._lag: dict[str, int] = {}
        self._leaves_per_shard: dict[int, int] = {}
        self._checkpoint_size: dict[int, int] = {}
        # Recovery state: set when a failed transaction could not be fully undone
        # at once (the broker did not answer); done before anything else is polled.
        self._need_rewind = False
        self._need_producer = False
        self._batch_group: GroupMetadata | None = None

        self._health: HealthServer | None = None
        self.metrics_port: int | None = None
        self._consumer: Consumer | None = None
        self._consent: Consumer | None = None
        self._audit: Consumer | None = None
        self._producer: Producer | None = None
        try:
            self._open_clients()
        except BaseException:
            self.close()
            raise
        if metrics_port is not None:
            self._health = HealthServer(
                self.metrics, self.health, host=metrics_host or "127.0.0.1", port=metrics_port
            ).start()
            self.metrics_port = self._health.port

    def _new_writer_token(self) -> None:
        self._writer_token = secrets.token_bytes(16)
        self._audit_headers = [(AUDIT_WRITER_HEADER, self._writer_token)]

    def _open_clients(self) -> None:
        cfg = self._client_config
        # Ingest topics, and the consent topic (whose bad records the group
        # quarantines exactly once; consent *state* comes from self._consent).
        pattern = (
            "^("
            + re.escape(self.topics.ingest_prefix)
            + r"[a-z0-9][a-z0-9_-]*"
            + "|"
            + re.escape(self.topics.consent)
            + ")$"
        )
        self._consumer = make_consumer(
            self._bootstrap,
            group_id=self.topics.router_group,
            pattern=pattern,
            isolation_level="read_committed",
            max_poll_records=self._max_batch,
            # New topics (a new agency) are picked up without a restart.
            metadata_max_age_ms=5000,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=self._max_poll_interval_ms,
            # Every instance gets partitions: one ingest topic per agency, each
            # of a few partitions, leaves range-assigned extra instances idle.
            assignors=("roundrobin", "range"),
            client_id=f"safeshare-router-{self.instance_id}",
            **cfg,
        )
        self._consent = make_consumer(
            self._bootstrap, group_id=None, topics=None, isolation_level="read_committed", **cfg
        )
        # Follows the audit and checkpoints topics: routed event ids, checkpoint lag.
        self._audit = make_consumer(
            self._bootstrap, group_id=None, topics=None, isolation_level="read_committed", **cfg
        )
        self._producer = self._new_producer()

    def _new_producer(self) -> Producer:
        producer = make_producer(
            self._bootstrap,
            transactional_id=self._transactional_id,
            client_id=f"safeshare-router-{self.instance_id}",
            linger_ms=PRODUCER_LINGER_MS,
            batch_size=PRODUCER_BATCH_BYTES,
            **self._client_config,
        )
        try:
            producer.init_transactions()  # fences (and aborts) an older one with our id
        except BaseException:
            _close_quietly(producer)
            raise
        return producer

    # -- state followed by every instance -------------------------------------
    def _catch_up_consent(self) -> None:
        """Fold every committed consent record into the consent state."""
        assert self._consent is not None
        if not _follow_from_start(self._consent, [self.topics.consent]):
            return
        def fold(r: Record) -> None:
            if not self.core.apply_consent(_inbound(r)):
                log.debug("consent record %s unusable (quarantined by the group)", _where(r))

        _catch_up(self._consent, "consent", fold)

    def _catch_up_audit(self) -> None:
        """Learn every event id committed to the audit log (by any instance), count
        the committed leaves and note the newest checkpoint of each shard."""
        assert self._audit is not None
        follow = [self.topics.audit, self.topics.audit_checkpoints]
        if not _follow_from_start(self._audit, follow):
            return
        seen = self.core.seen_event_ids
        audit, checkpoints = self.topics.audit, self.topics.audit_checkpoints
        own = ((AUDIT_WRITER_HEADER, self._writer_token),)

        def learn(r: Record) -> None:
            if r.topic == checkpoints:
                self._note_checkpoint(r)
                return
            if r.topic != audit:
                return
            if r.headers == own:
                # Committed by this process: its event ids were noted as it
                # routed them (an aborted batch is never read back, read_committed).
                count = batch_size(r.value or b"")
                if count is not None:
                    self._leaves_per_shard[r.partition] = (
                        self._leaves_per_shard.get(r.partition, 0) + count
                    )
                    return
            try:
                leaves = decode_batch(r.value or b"")
            except AuditError:
                log.error("audit record %s is not a leaf batch", _where(r))
                return
            self._leaves_per_shard[r.partition] = (
                self._leaves_per_shard.get(r.partition, 0) + len(leaves)
            )
            for leaf in leaves:
                seen.add_from_leaf(leaf)

        owned = self._assignment()
        if owned != self._audit_caught_up_for:
            # Starting, or partitions moved: read to the end before routing, so
            # every id committed by the partitions' previous owners is known.
            _catch_up(self._audit, "audit", learn)
            self._audit_caught_up_for = owned
        else:
            # Steady state: take what the client has fetched meanwhile without
            # waiting on the broker (a round trip per transaction saved); other
            # instances' ids arrive a fetch later.
            for r in self._audit.poll_records(timeout_ms=0):
                learn(r)
        lag = sum(
            max(0, n - self._checkpoint_size.get(shard, 0))
            for shard, n in self._leaves_per_shard.items()
        )
        self.metrics.checkpoint_lag.set(lag)

    def _note_checkpoint(self, r: Record) -> None:
        """A checkpoints-topic record: if it is a checkpoint, the size it signed.

        Headers only (see broker.audit.stream): this is a gauge for operators,
        not a verification; auditors verify the signed notes themselves.
        """
        headers = dict(r.headers)
        if headers.get("type") != b"checkpoint":
            return
        try:
            shard, size = int(headers["shard"]), int(headers["size"])
        except (KeyError, ValueError):
            return
        if size > self._checkpoint_size.get(shard, -1):
            self._checkpoint_size[shard] = size

    # -- health ----------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while the loop polls and its transactions commit.

        ``consuming``: the loop polled within :data:`HEALTH_STALE_S`.
        ``committing``: no transaction has been failing for that long (an idle
        router that has nothing to commit is committing).
        """
        now = time.monotonic()
        since_poll = now - self._last_poll
        consuming = since_poll < HEALTH_STALE_S
        failing_for = None if self._failing_since is None else now - self._failing_since
        committing = failing_for is None or failing_for < HEALTH_STALE_S
        ok = not self._stop.is_set() and consuming and committing
        return ok, {
            "instance": self.instance_id,
            "consuming": consuming,
            "committing": committing,
            "seconds_since_poll": round(since_poll, 3),
            "seconds_since_commit": (
                None if self._last_commit_at is None else round(now - self._last_commit_at, 3)
            ),
            "failing_for_seconds": None if failing_for is None else round(failing_for, 3),
            "consecutive_failures": self._failures,
            "last_error": self._last_error or None,
            "last_commit_ms": self.stats.last_commit_ms,
            "transactions": self.stats.transactions,
            "aborted": self.stats.aborted,
            "assigned_partitions": len(self._assignment()),
            "consumer_lag": sum(self._lag.values()),
        }

    def _assignment(self) -> set[TopicPartition]:
        consumer = self._consumer
        if consumer is None:
            return set()
        try:
            return consumer.assignment()
        except Exception:  # noqa: BLE001 - health must answer whatever the client does
            return set()

    def assignment(self) -> set[TopicPartition]:
        """The ingest and consent partitions this instance owns in the group now."""
        return self._assignment()

    def _update_lag(self, *, force: bool = False) -> bool:
        """``safeshare_consumer_lag{topic}``: end offsets minus positions, per topic.

        At most every :data:`LAG_INTERVAL_S` unless ``force``; False if it
        could not be measured now.
        """
        now = time.monotonic()
        if not force and now - self._lag_at < LAG_INTERVAL_S:
            return False
        self._lag_at = now
        consumer = self._consumer
        assert consumer is not None
        tps = sorted(consumer.assignment())
        lag: dict[str, int] = {}
        try:
            end = consumer.end_offsets(tps) if tps else {}
            for tp in tps:
                lag[tp.topic] = lag.get(tp.topic, 0) + max(0, end[tp] - consumer.position(tp))
        except KafkaError as exc:  # a gauge; the loop notices real trouble itself
            log.debug("consumer lag not measured: %s", exc)
            return False
        gauge = self.metrics.consumer_lag
        for topic in set(self._lag) - set(lag):
            gauge.remove(topic)
        for topic, n in lag.items():
            gauge.labels(topic).set(n)
        self._lag = lag
        self.metrics.assigned_partitions.set(len(tps))
        return True

    # -- main loop -----------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to stop after the current batch (safe from any thread)."""
        self._stop.set()

    def run(
        self, *, idle_exit_s: float | None = None, max_events: int | None = None
    ) -> RouterStats:
        """Route until :meth:`stop`, or until idle for ``idle_exit_s``, or ``max_events``.

        Returns normally also when fenced (``stats.fenced``); raises what is not
        a Kafka error (after aborting the transaction).
        """
        last_activity = time.monotonic()
        try:
            while not self._stop.is_set():
                try:
                    self._repair()
                    batches = self._poll()
                    group = self._batch_group
                    # Consent after the poll: a consent record committed before
                    # an event of this batch was is applied when it is routed.
                    self._catch_up_consent()
                    self._catch_up_audit()
                    if batches:
                        last_activity = time.monotonic()
                        assert group is not None
                        self._process(batches, group)
                except ProducerFencedError as exc:
                    self._fenced(exc)
                    break
                except KafkaError as exc:
                    last_activity = time.monotonic()  # in trouble is not idle
                    self._failed(exc)
                    continue
                self._recovered(bool(batches))
                self._update_lag()
                idle_for = time.monotonic() - last_activity
                if not batches and idle_exit_s is not None and idle_for > idle_exit_s:
                    break
                if max_events is not None and self.stats.consumed >= max_events:
                    break
        finally:
            self.close()
        return self.stats

    def _fenced(self, exc: ProducerFencedError) -> None:
        self.stats.fenced = True
        self._last_error = f"fenced: {exc}"
        log.error(
            "router %s fenced: another process now uses transactional id %s; "
            "stopping without writing anything more (%s)",
            self.instance_id, self._transactional_id, exc,
        )

    def _poll(self) -> dict[TopicPartition, list[Record]]:
        assert self._consumer is not None
        batches = self._consumer.poll(
            timeout_ms=self._poll_timeout_ms, max_records=self._max_batch
        )
        # KIP-447: the generation that owned these partitions when they were
        # polled. Taken now, not at commit time: a rebalance completing in the
        # background meanwhile must make the broker refuse these offsets.
        self._batch_group = self._consumer.group_metadata()
        self._last_poll = time.monotonic()
        return batches

    def _repair(self) -> None:
        """Finish undoing a failed transaction before anything new is polled."""
        if self._need_producer:
            old, self._producer = self._producer, None
            if old is not None:
                _close_quietly(old, timeout=1.0)
            self._producer = self._new_producer()
            self._need_producer = False
            self.stats.producer_restarts += 1
            self.metrics.producer_restarts.inc()
            log.info("router %s: new transactional producer ready", self.instance_id)
        if self._need_rewind:
            assert self._consumer is not None
            self._consumer.rewind_to_committed()
            self._need_rewind = False
            log.info(
                "router %s: rewound to committed offsets %s",
                self.instance_id, _positions(self._consumer),
            )

    def _failed(self, exc: KafkaError) -> None:
        """Note a failure and wait before the next attempt (capped exponential backoff)."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        self._failures += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        first, cap = self._retry_backoff_s
        delay = min(cap, first * 2 ** min(self._failures - 1, 16))
        log.warning(
            "router %s: %s (attempt %d, failing for %.1f s); retrying in %.1f s",
            self.instance_id, self._last_error, self._failures, now - self._failing_since, delay,
        )
        self._stop.wait(delay)

    def _start(
        self, batches: dict[TopicPartition, list[Record]], group: GroupMetadata
    ) -> _Open:
        """Open a transaction for a polled batch: route it, send every record and
        the batch's offsets. :meth:`_finish` commits it."""
        producer = self._producer
        assert producer is not None
        seen = self.core.seen_event_ids
        txn = _Open(batches, seen.mark(), time.monotonic())
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
            txn.offsets_sent = producer.start_sending_offsets(offsets, group)
            send = producer.send
            handle = self.core.handle
            debug = log.isEnabledFor(logging.DEBUG)
            routed_all, leaves, wheres, futures = txn.routed, txn.leaves, txn.wheres, txn.futures
            for records in batches.values():
                for r in records:
                    routed = handle(_inbound(r))
                    if debug:
                        wheres.append(_where(r))
                    leaves.extend(routed.leaves)
                    routed_all.append(routed)
            # Sent after the whole batch is routed, in one run: the client's
            # send path stays hot in the CPU caches instead of alternating with
            # routing (measured ~10% cheaper per record). Nothing leaves before
            # the flush anyway (the producer lingers longer than a transaction).
            txn.copies = producer.send_all(
                (out.topic, out.key, out.value) for routed in routed_all for out in routed.outputs
            )
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
            producer.flush()
            if txn.copies is not None:
                txn.copies.raise_if_failed()
            for fut in txn.futures:
                fut.raise_if_failed()
            txn.offsets_sent()
            producer.commit_transaction()
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
        # The transaction may have committed all the same (a commit the broker
        # applied but whose answer was lost): then its offsets went with it, the
        # batch is not replayed, and the forgotten ids come back only from the
        # audit log. A new writer token makes this process read its earlier
        # batches back in full, like another instance's.
        self._new_writer_token()
        self._replay_pending = True
        self.stats.aborted += 1
        self.metrics.txn_aborted.inc()
        self._need_rewind = True
        if isinstance(exc, ProducerFencedError):
            return  # a fenced producer may not even abort
        log.warning(
            "router %s: transaction for %s failed (%s); aborting, %d event id(s) "
            "marked unrouted, batch to be replayed",
            self.instance_id, _span(txn.batches), _describe(exc), forgotten,
        )
        try:
            producer.abort_transaction()
        except ProducerFencedError:
            raise
        except Exception as abort_exc:  # noqa: BLE001 - replaced by a new producer instead
            log.warning(
                "router %s: abort failed (%s); the producer will be replaced, which "
                "aborts the transaction on the broker",
                self.instance_id, _describe(abort_exc),
            )
            self._need_producer = True
        if isinstance(exc, KafkaError):
            with _suppress_kafka():
                self._repair()

    def _recovered(self, committed: bool) -> None:
        """A loop iteration went through: it polled, and committed if there was a batch.

        After a failed transaction an empty poll is not enough (the fetch after
        the rewind may simply not be back yet, or the broker be unreachable):
        the failure is over when the router commits, or when there is nothing
        left for it to commit (consumer lag 0).
        """
        if committed:
            self._replay_pending = False
        elif self._replay_pending:
            measured = self._update_lag(force=True)
            left = sum(self._lag.values())
            if not measured or left > 0:
                return
            self._replay_pending = False
        if self._failing_since is not None:
            log.info(
                "router %s: working again after %.1f s and %d failed attempt(s)",
                self.instance_id, time.monotonic() - self._failing_since, self._failures,
            )
        self._failing_since = None
        self._failures = 0

    def _committed(self, txn: _Open) -> None:
        now = time.monotonic()
        self._last_commit_at = now
        self.metrics.txn_duration.observe(now - txn.started)
        self.metrics.audit_leaves.inc(len(txn.leaves))
        routed_all = txn.routed
        self._account(routed_all)
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
        if self._on_batch is not None:
            self._on_batch(routed_all)

    def _account(self, routed_all: list[Routed]) -> None:
        """Count a committed batch: tallied here, then one metric update per label set
        (a labelled metric update takes a lock; per event that was measurable)."""
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

    def close(self) -> None:
        if self._health is not None:
            self._health.close()
            self._health = None
        for client in (self._consumer, self._consent, self._audit):
            if client is not None:
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    log.exception("close failed")
        if self._producer is not None:
            # A fenced producer's close must not wait for anything.
            _close_quietly(self._producer, timeout=1.0 if self.stats.fenced else 10.0)
        self._consumer = self._consent = self._audit = None
        self._producer = None


def _inbound(r: Record) -> Inbound:
    return Inbound(r.topic, r.partition, r.offset, r.key, r.value, r.timestamp)


def _where(r: Record) -> str:
    return f"{r.topic}[{r.partition}]@{r.offset}"


def _span(batches: Mapping[TopicPartition, list[Record]]) -> str:
    """``topic[p]@first-last`` for each partition of a batch."""
    return ", ".join(
        f"{tp.topic}[{tp.partition}]@{recs[0].offset}-{recs[-1].offset}"
        for tp, recs in batches.items()
        if recs
    )


def _positions(consumer: Consumer) -> str:
    try:
        return ", ".join(
            f"{tp.topic}[{tp.partition}]@{consumer.position(tp)}"
            for tp in sorted(consumer.assignment())
        ) or "(no partitions)"
    except KafkaError:
        return "(positions unknown)"


def _describe(exc: BaseException) -> str:
    """An error for a log line: Kafka's messages in full (they name topics and
    brokers); of any other error only its type, as its message might quote data."""
    if isinstance(exc, KafkaError):
        return f"{type(exc).__name__}: {exc}"
    return f"{type(exc).__name__} (message withheld from the log)"


def _close_quietly(producer: Producer, timeout: float = 10.0) -> None:
    try:
        producer.close(timeout=timeout)
    except Exception:  # noqa: BLE001 - closing a broken producer; nothing more to do
        log.debug("closing producer failed", exc_info=True)


class _suppress_kafka:  # noqa: N801 - used like contextlib.suppress
    """Suppress Kafka errors (logged at debug): for best-effort steps retried later."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: object) -> bool:
        if exc is not None and isinstance(exc, KafkaError) and not isinstance(
            exc, ProducerFencedError
        ):
            log.debug("deferred: %s", exc)
            return True
        return False


CATCH_UP_DEADLINE_S = 10.0


def _catch_up(consumer: Consumer, what: str, handle: Callable[[Record], object]) -> None:
    """Every record up to the (last stable) end offsets at the time of the call.

    Bounded in time: an open transaction of another producer holds the last
    stable offset back, and the loop must not wait for it forever; what is
    left is read on the next round.
    """
    behind = catch_up(consumer, consumer.assignment(), handle, timeout_s=CATCH_UP_DEADLINE_S)
    if behind:
        log.warning(
            "%s catch-up incomplete after %.0f s (%d partition(s) behind); continuing",
            what, CATCH_UP_DEADLINE_S, len(behind),
        )


def _follow_from_start(consumer: Consumer, topics: list[str]) -> bool:
    """Assign every partition of ``topics`` from the beginning, once; False if none is known.

    The first topic must exist; later ones are followed if they exist at that
    moment (the checkpoints topic may be created after the router starts).
    """
    if consumer.assignment():
        return True
    tps: list[TopicPartition] = []
    for i, topic in enumerate(topics):
        parts = consumer.partitions_for_topic(topic) or set()
        if not parts and i == 0:
            return False
        tps += [TopicPartition(topic, p) for p in sorted(parts)]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    return True
