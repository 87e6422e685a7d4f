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
   on replay they must be routed, not flagged as duplicates, and takes back
   the consent records and expiries it applied (:meth:`RoutingCore.rollback_consents`);
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
its id, so it fences its own zombie. The id is also its static group
membership (KIP-345): restarted after a crash it takes its partitions back
without a rebalance, so the others never wait for it (docs/DESIGN.md).

Consent records arrive on each agency's consent topic and are routed by the
group like events (consent partitions first in a batch): applied with a
CONSENT audit leaf in the batch's transaction, or quarantined. The audit log,
and with it every instance's consent state, is followed by every instance
(:mod:`broker.routing.followers`); a batch's transaction is
:mod:`broker.routing.transaction`; this module is the loop, its recovery and
its health.

Log lines carry ``topic[partition]@offset`` and event ids, never anything
about a child.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from broker.config import DEFAULT_ROUTER_MAX_BATCH
from broker.kafka.consumer import Consumer, make_consumer
from broker.kafka.exceptions import KafkaError, ProducerFencedError
from broker.kafka.logs import REMOVED_FROM_GROUP, client_summary, condition
from broker.kafka.producer import Producer
from broker.kafka.structs import GroupMetadata, Record, TopicPartition
from broker.routing.core import Routed, RoutingCore
from broker.routing.followers import Followers
from broker.routing.metrics import HealthServer, RouterMetrics
from broker.routing.sources import source_pattern, subscribe_sources
from broker.routing.transaction import (
    PRODUCER_BLOCK_MS,
    TRANSACTION_TIMEOUT_MS,
    TRANSACTION_WAIT_S,
    AuditEncoder,
    RouterStats,
    Transactions,
    _close_quietly,
)
from broker.topics import Topics

__all__ = ["RouterService", "RouterStats"]

log = logging.getLogger(__name__)

#: /healthz turns 503 when the loop has not polled, or transactions have kept
#: failing, for this long.
HEALTH_STALE_S = 30.0

#: How often the consumer lag gauge is refreshed (one ListOffsets round trip).
LAG_INTERVAL_S = 5.0
#: ``run(idle_exit_s=...)`` does not count the time spent joining the group as
#: idle (a busy broker can take seconds to assign partitions), up to this long.
JOIN_GRACE_S = 60.0

#: Backoff between attempts after a failed transaction: doubles from the first
#: value up to the second.
RETRY_BACKOFF_S = (0.2, 5.0)

#: A crashed router's partitions wait this long for it to restart before they
#: move (static membership: its restart rebalances nothing, the others carry
#: on). The broker's minimum is 6 s; kafka-python's 45 s would strand them.
SESSION_TIMEOUT_MS = 10_000
#: The others learn of a rebalance at their next heartbeat, and (eager
#: protocol) every router stops until all have rejoined: 1 s, not 3 s.
HEARTBEAT_INTERVAL_MS = 1_000
MAX_POLL_INTERVAL_MS = 300_000  # kafka-python's and Kafka's default
#: kafka-python backs off reconnecting up to 30 s, which leaves a router idle
#: long after a broker restart; 1 s is the Java clients' default.
RECONNECT_BACKOFF_MAX_MS = 1_000


#: /healthz says "not committing" when a transaction has been open this long.
TRANSACTION_SLOW_S = 10.0
#: How long closing a client may wait for the broker when stopping normally.
CLOSE_WAIT_S = 5.0
#: While one condition lasts, it is logged again at warning level this often.
CONDITION_REMINDER_S = 60.0


def _iso(wall: float) -> str:
    """A wall-clock time as ISO 8601 UTC, to the second."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(wall))


class RouterService(Followers, Transactions):
    """Runs :class:`RoutingCore` against Kafka, transactionally. See the module docstring."""

    def __init__(
        self,
        *,
        bootstrap: str,
        core: RoutingCore,
        topics: Topics,
        instance_id: str,
        audit_encoder: AuditEncoder,
        max_batch: int = DEFAULT_ROUTER_MAX_BATCH,
        poll_timeout_ms: int = 200,
        on_batch: Callable[[list[Routed]], None] | None = None,
        metrics: RouterMetrics | None = None,
        metrics_host: str | None = None,
        metrics_port: int | None = None,
        retry_backoff_s: tuple[float, float] = RETRY_BACKOFF_S,
        max_poll_interval_ms: int = MAX_POLL_INTERVAL_MS,
        client_config: Mapping[str, Any] | None = None,
        transaction_wait_s: float = TRANSACTION_WAIT_S,
        wait_for_broker: bool = False,
        source_topics: Iterable[str] | None = None,
    ) -> None:
        """``max_poll_interval_ms``: an instance that has not polled for this long
        (a batch that takes longer, a stalled process) is put out of the group and
        its partitions move on; its late offsets are then refused (KIP-447).
        ``client_config``: extra kafka-python settings for every client (e.g. security).
        ``transaction_wait_s``: how long each step of a transaction (flush, offsets,
        commit, abort) waits for the broker before the transaction is given up.
        ``wait_for_broker``: connect in :meth:`run`, retrying with back-off while
        the broker cannot be reached (``/healthz`` answers meanwhile), instead of
        failing here. ``source_topics``: the topics the policy names
        (:func:`broker.routing.sources.policy_topics`); None: every topic matching
        the router's pattern, found by regex."""
        self._max_poll_interval_ms = max_poll_interval_ms
        self._source_topics = None if source_topics is None else tuple(source_topics)
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
        self._transaction_wait_s = transaction_wait_s
        self._stop = threading.Event()

        # Health and lag bookkeeping.
        self._last_poll: float | None = None
        self._last_commit_at: float | None = None
        self._failing_since: float | None = None
        self._failing_since_wall: float | None = None
        self._failures = 0
        # The trouble the loop is in, in an operator's words (None: none), and
        # when it was last logged at warning level.
        self._condition: str | None = None
        self._condition_logged_at = float("-inf")
        # Start of the transaction in progress (None: none), for /healthz.
        self._open_since: float | None = None
        # The last abandoned batch, for the failure's log line.
        self._abandoned = ""
        self._quarantined_logged = 0
        self._noted: BaseException | None = None
        self._reason: str | None = None
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
        self._audit: Consumer | None = None
        self._producer: Producer | None = None
        self._wait_for_broker = wait_for_broker
        if not wait_for_broker:
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

    def _open_clients(self) -> None:
        # A broker that cannot be reached fails this within PRODUCER_BLOCK_MS
        # (kafka-python: 30 s), so a router waiting for one notices a stop soon.
        cfg = {"bootstrap_timeout_ms": PRODUCER_BLOCK_MS, **self._client_config}

        # Ingest and consent topics, one of each per agency: consent records are
        # routed by the group like events (applied and audited, or quarantined);
        # so are link/unlink decisions, one topic per subscriber. By name when the
        # policy's topics are known (broker/routing/sources.py says why).
        named = self._source_topics
        self._consumer = make_consumer(
            self._bootstrap,
            group_id=self.topics.router_group,
            pattern=None if named is not None else source_pattern(self.topics),
            isolation_level="read_committed",
            max_poll_records=self._max_batch,
            # A new topic is read without a restart.
            metadata_max_age_ms=5000,
            session_timeout_ms=SESSION_TIMEOUT_MS,
            heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS,
            max_poll_interval_ms=self._max_poll_interval_ms,
            # Every instance gets partitions: one ingest topic per agency, each
            # of a few partitions, leaves range-assigned extra instances idle.
            assignors=("roundrobin", "range"),
            client_id=f"safeshare-router-{self.instance_id}",
            # Static member: a crashed instance restarted with its id takes its
            # partitions back without a rebalance, so the others never stop.
            group_instance_id=self.instance_id,
            allow_auto_create_topics=False,
            **cfg,
        )
        if named is not None:
            subscribe_sources(self._consumer, self.topics, named, who=self.instance_id)
        # Follows the audit and checkpoints topics: routed event ids, checkpoint lag.
        self._audit = make_consumer(
            self._bootstrap, group_id=None, topics=None, isolation_level="read_committed", **cfg
        )
        self._producer = self._new_producer()

    # -- health ----------------------------------------------------------------
    def health(self) -> tuple[bool, dict[str, Any]]:
        """Healthy while the loop polls and its transactions commit.

        ``consuming``: the loop polled within :data:`HEALTH_STALE_S` (false
        while starting, or connecting to a broker that cannot be reached).
        ``committing``: false from the first failed transaction until one
        commits again (or nothing is left to commit), and while a transaction
        has been open longer than :data:`TRANSACTION_SLOW_S` (waiting for a
        broker that does not answer); ``not_committing_since`` and ``reason``
        say since when and why. A router with nothing to commit is committing.
        ``ok`` (200, else 503) tolerates a failure for :data:`HEALTH_STALE_S`
        before turning, so a leader moving does not flap it.
        """
        now = time.monotonic()
        since_poll = None if self._last_poll is None else now - self._last_poll
        consuming = since_poll is not None and since_poll < HEALTH_STALE_S
        failing_for = None if self._failing_since is None else now - self._failing_since
        open_for = None if self._open_since is None else now - self._open_since
        stuck = open_for is not None and open_for > TRANSACTION_SLOW_S
        committing = failing_for is None and not stuck and since_poll is not None
        trouble_for = failing_for if failing_for is not None else (open_for if stuck else None)
        ok = (
            not self._stop.is_set()
            and consuming
            and (trouble_for is None or trouble_for < HEALTH_STALE_S)
        )
        if self._failing_since_wall is not None:
            since_wall: float | None = self._failing_since_wall
            reason = self._reason
        elif stuck and open_for is not None:
            since_wall = time.time() - open_for
            reason = f"a transaction open for {open_for:.0f} s, waiting for the broker"
        else:
            since_wall, reason = None, None
        return ok, {
            "instance": self.instance_id,
            "state": (
                "stopping" if self._stop.is_set()
                else "connecting" if self._producer is None
                else "committing" if committing
                else "not committing"
            ),
            "consuming": consuming,
            "committing": committing,
            "not_committing_since": None if since_wall is None else _iso(since_wall),
            "reason": reason,
            "seconds_since_poll": None if since_poll is None else round(since_poll, 3),
            "seconds_since_commit": (
                None if self._last_commit_at is None else round(now - self._last_commit_at, 3)
            ),
            "failing_for_seconds": None if trouble_for is None else round(trouble_for, 3),
            "transaction_open_seconds": None if open_for is None else round(open_for, 3),
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
        last_activity = started = time.monotonic()
        try:
            if self._wait_for_broker and not self._connect():
                return self.stats
            while not self._stop.is_set():
                try:
                    self._repair()
                    batches = self._poll()
                    group = self._batch_group
                    self._catch_up_audit()
                    if batches:
                        last_activity = time.monotonic()
                        assert group is not None
                        self._process(batches, group)
                    elif group and self.core.identity and self.core.identity.pairs_pending():
                        self._process({}, group)  # review items met in another's entries
                except ProducerFencedError as exc:
                    self._fenced(exc)
                    break
                except KafkaError as exc:
                    last_activity = time.monotonic()  # in trouble is not idle
                    self._failed(exc)
                    continue
                self._recovered(bool(batches))
                self._update_lag()
                if not self._assignment() and time.monotonic() - started < JOIN_GRACE_S:
                    last_activity = time.monotonic()  # still joining the group: not idle
                idle_for = time.monotonic() - last_activity
                if not batches and idle_exit_s is not None and idle_for > idle_exit_s:
                    break
                if max_events is not None and self.stats.consumed >= max_events:
                    break
        finally:
            self.close()
        return self.stats

    def _connect(self) -> bool:
        """Open the clients, retrying with back-off while the broker cannot be
        reached; False if asked to stop first. Errors that are not Kafka's
        (configuration) propagate."""
        while not self._stop.is_set():
            try:
                self._open_clients()
            except KafkaError as exc:
                self._close_clients(timeout_s=0)
                if isinstance(exc, ProducerFencedError):
                    raise
                self._failed(exc, connecting=True)
                continue
            if self._failing_since is not None:
                log.warning(
                    "router %s: connected after %.1f s and %d attempt(s)",
                    self.instance_id, time.monotonic() - self._failing_since, self._failures,
                )
            self._failing_since = self._failing_since_wall = None
            self._failures, self._condition, self._reason = 0, None, None
            return True
        return False

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

    def _note_failure(self, exc: BaseException) -> None:
        """Count a failure for /healthz the moment it happens (before the abort)."""
        if self._failing_since is None:
            self._failing_since = time.monotonic()
            self._failing_since_wall = time.time()
        self._failures += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._reason = condition(exc)
        self._noted = exc

    def _failed(self, exc: KafkaError, *, connecting: bool = False) -> None:
        """Note a failure, say so once per condition, and wait before the next
        attempt (capped exponential backoff; a stop ends the wait)."""
        now = time.monotonic()
        if exc is not self._noted:
            self._note_failure(exc)
        self._noted = None
        assert self._failing_since is not None
        first, cap = self._retry_backoff_s
        delay = min(cap, first * 2 ** min(self._failures - 1, 16))
        what = condition(exc)
        abandoned, self._abandoned = self._abandoned, ""
        if what != self._condition or now - self._condition_logged_at >= CONDITION_REMINDER_S:
            self._condition, self._condition_logged_at = what, now
            doing = "cannot connect" if connecting else "not committing"
            replay = "" if not abandoned or what == REMOVED_FROM_GROUP else (
                f"; batch {abandoned} to be replayed"
            )
            log.warning(
                "router %s: %s: %s (%s)%s; retrying with back-off up to %.0f s "
                "(attempt %d, for %.0f s)%s",
                self.instance_id, doing, what, self._last_error, replay, cap,
                self._failures, now - self._failing_since, client_summary(),
            )
        else:
            log.debug(
                "router %s: %s again (attempt %d): %s; retrying in %.1f s",
                self.instance_id, what, self._failures, self._last_error, delay,
            )
        self._stop.wait(delay)

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
            log.warning(
                "router %s: committing again after %.1f s and %d failed attempt(s) (%s)",
                self.instance_id, time.monotonic() - self._failing_since, self._failures,
                self._condition or "failing",
            )
        self._failing_since = self._failing_since_wall = None
        self._failures = 0
        self._condition = self._reason = None

    def close(self) -> None:
        if self._health is not None:
            self._health.close()
            self._health = None
        self._close_clients(timeout_s=None)

    def _close_clients(self, timeout_s: float | None) -> None:
        """Close every client; ``timeout_s`` None: as long as the state needs.

        A transaction left unfinished (the broker did not answer its abort, or a
        stop cut the wait short) is abandoned, not waited for: the broker aborts
        it when this instance's transactional id is next initialised (which
        fences this process) or when the transaction timeout expires.
        """
        unfinished = self._need_producer or self._open_since is not None
        for client in (self._consumer, self._audit):
            if client is not None:
                try:
                    client.close(timeout_s=CLOSE_WAIT_S if timeout_s is None else timeout_s)
                except Exception:  # noqa: BLE001
                    log.debug("closing a consumer failed", exc_info=True)
        if self._producer is not None:
            if unfinished and timeout_s is None:
                log.warning(
                    "router %s: stopping with the transaction for %s unfinished; abandoned "
                    "it: Kafka aborts it when instance %s next starts, or after the "
                    "transaction timeout (%d s)", self.instance_id, self._abandoned or "a batch",
                    self.instance_id, TRANSACTION_TIMEOUT_MS // 1000,
                )
            if timeout_s is None:
                # A fenced producer's or an abandoned transaction's close must not wait.
                timeout_s = 0.0 if unfinished or self.stats.fenced else CLOSE_WAIT_S
            _close_quietly(self._producer, timeout=timeout_s)
        self._consumer = self._audit = None
        self._producer = None


def _positions(consumer: Consumer) -> str:
    try:
        return ", ".join(
            f"{tp.topic}[{tp.partition}]@{consumer.position(tp)}"
            for tp in sorted(consumer.assignment())
        ) or "(no partitions)"
    except KafkaError:
        return "(positions unknown)"
