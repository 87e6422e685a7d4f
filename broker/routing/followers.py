"""State every router instance follows, each on its own group-less consumer.

- the audit topic: every routed event id (so a repeated event is not shared
  twice, whichever instance routed it first), the consent records other
  instances applied (their CONSENT leaves: the consent state is rebuilt from
  the audit log, so only records the router accepted ever count; one applied
  by another instance counts here a fetch after its commit), and the number
  of committed leaves per shard; and the checkpoints topic: the size of the newest signed
  checkpoint per shard. Their difference is the audit checkpoint lag.

:class:`Followers` is a part of :class:`~broker.routing.service.RouterService`,
which owns the consumers and the state declared here.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable

from broker.audit.exceptions import AuditError
from broker.audit.leaf import batch_size, decode_batch
from broker.kafka.consumer import Consumer, catch_up
from broker.kafka.structs import Record, TopicPartition
from broker.routing._records import _where
from broker.routing.core import RoutingCore
from broker.routing.metrics import RouterMetrics
from broker.topics import Topics

log = logging.getLogger(__name__)

#: Header on the router's audit batches: a random token of the writing process.
AUDIT_WRITER_HEADER = "safeshare-router-writer"
#: What marks a CONSENT leaf (broker.audit.leaf) in its canonical bytes.
_CONSENT_LEAF = b'"kind":"CONSENT"'


class Followers:
    """The router's audit catch-up, consent state included (see the module docstring)."""

    core: RoutingCore
    topics: Topics
    metrics: RouterMetrics
    _audit: Consumer | None
    _writer_token: bytes
    _audit_headers: list[tuple[str, bytes]]
    _audit_caught_up_for: set[TopicPartition] | None
    _leaves_per_shard: dict[int, int]
    _checkpoint_size: dict[int, int]

    def _assignment(self) -> set[TopicPartition]:
        raise NotImplementedError

    def _new_writer_token(self) -> None:
        self._writer_token = secrets.token_bytes(16)
        self._audit_headers = [(AUDIT_WRITER_HEADER, self._writer_token)]

    # -- state followed by every instance -------------------------------------
    def _catch_up_audit(self) -> None:
        """Learn every event id committed to the audit log (by any instance), count
        the committed leaves and note the newest checkpoint of each shard."""
        assert self._audit is not None
        # The identity index too: read from the start it rebuilds the index.
        follow = [self.topics.audit, self.topics.audit_checkpoints, self.topics.identity]
        if not _follow_from_start(self._audit, follow):
            return
        seen = self.core.seen_event_ids
        audit, checkpoints = self.topics.audit, self.topics.audit_checkpoints
        identity = self.topics.identity
        own = ((AUDIT_WRITER_HEADER, self._writer_token),)
        # Rebuilding the index (the first read from the start) is not following it:
        # another instance's new children are scored only as they come.
        live = self._audit_caught_up_for is not None

        def learn(r: Record) -> None:
            if r.topic == checkpoints:
                self._note_checkpoint(r)
                return
            if r.topic == identity:
                self.core.learn_identity_record(r.key, r.value, live=live)
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
                if _CONSENT_LEAF in leaf:
                    self.core.learn_consent_leaf(leaf)

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
