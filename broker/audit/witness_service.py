"""A witness on Kafka: cosigns a shard's checkpoints after checking them against the leaves.

Where the consistency proof comes from is the design choice here. The
checkpointer does **not** publish proofs. The witness replays the audit
partition itself (``read_committed``, the same order the checkpointer uses)
and computes every root and consistency proof (RFC 9162 §2.1.4) from the
leaves it read. So it trusts no proof source of the operator's: a checkpoint
is cosigned only if

1. a key of the log signed it: the trust anchor given out of band, then the
   signed key lists found on the checkpoints topic, each accepted only if the
   previous version's current key signed it (:class:`~broker.audit.keys.KeyRing`);
2. the audit partition holds at least its ``size`` committed leaves and they
   give its root: a signed root that the stored leaves do not give is a
   split view (the operator signed a history that is not the one in Kafka,
   or shows another one elsewhere);
3. :meth:`broker.audit.cosignature.Witness.cosign` accepts it: not older than
   the last cosigned size, same root at the same size, consistent with the
   last cosigned checkpoint. Its state file makes that hold across restarts.

The cosignature is published to the checkpoints topic as the checkpoint with
the witness's C2SP tlog-cosignature line appended (record layout in
:mod:`broker.audit.stream`). A split view raises
:class:`~broker.audit.exceptions.SplitViewError` carrying both roots; the CLI
exits non-zero with both.

Every checkpoint of the origin is checked; each new one that is larger than
the last cosigned is cosigned (a bundle verified with a witness quorum needs a
cosignature on every checkpoint).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from broker.audit.checkpoint import Checkpoint, open_checkpoint, origin_for_shard
from broker.audit.cosignature import Witness, add_cosignatures
from broker.audit.exceptions import (
    AuditError,
    SplitViewError,
    StaleCheckpointError,
)
from broker.audit.keys import KeyRing
from broker.audit.note import Ed25519Verifier
from broker.audit.stream import (
    CheckpointsTopic,
    LeafReader,
    RecordType,
    TopicEntry,
    cosignature_headers,
)
from broker.kafka.producer import Producer, make_producer
from broker.topics import Topics

__all__ = ["KafkaWitness", "WitnessReport"]

log = logging.getLogger(__name__)

#: How long to wait for the leaves a checkpoint claims to appear in the audit partition.
LEAVES_TIMEOUT_S = 10.0


@dataclass
class WitnessReport:
    """What one run of the witness did."""

    cosigned: list[Checkpoint] = field(default_factory=list)
    already_seen: int = 0
    refused: list[str] = field(default_factory=list)  # not signed by the log: not cosigned

    def summary(self) -> str:
        last = self.cosigned[-1] if self.cosigned else None
        return (
            f"cosigned {len(self.cosigned)} checkpoint(s)"
            + (f", latest size {last.size} root {last.root_hash.hex()}" if last else "")
            + f"; {self.already_seen} seen before; {len(self.refused)} refused"
        )


class KafkaWitness:
    """Follows one shard's checkpoints on Kafka and cosigns the consistent ones."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: Topics,
        witness: Witness,
        log_anchors: Iterable[str | Ed25519Verifier],
        shard: int = 0,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.shard = shard
        self.origin = origin_for_shard(shard)
        self.witness = witness
        self.ring = KeyRing(log_anchors)
        self._leaves: LeafReader | None = None
        self._topic: CheckpointsTopic | None = None
        self._producer: Producer | None = None

    def _open(self) -> None:
        if self._topic is None:
            self._topic = CheckpointsTopic(self.bootstrap, self.topics)
            # The witness does not sign leaves, it checks roots: framing and
            # hashing are enough (the leaves' form is verify_bundle's business).
            self._leaves = LeafReader(
                self.bootstrap, self.topics, shard=self.shard, validate_from=2**63
            )
            self._producer = make_producer(self.bootstrap, client_id="safeshare-witness")

    def run(
        self,
        *,
        follow: bool = False,
        idle_exit_s: float | None = None,
        stop_event: threading.Event | None = None,
    ) -> WitnessReport:
        """Process the checkpoints topic to its end (and, with ``follow``, keep going).

        Raises :class:`SplitViewError` at the first inconsistent checkpoint.
        """
        self._open()
        assert self._topic is not None
        report = WitnessReport()
        for e in self._topic.catch_up():
            self.handle(e, report)
        last_at = time.monotonic()
        while follow and (stop_event is None or not stop_event.is_set()):
            entries = self._topic.poll(timeout_ms=200)
            for e in entries:
                self.handle(e, report)
            if entries:
                last_at = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - last_at >= idle_exit_s:
                break
        return report

    def handle(self, e: TopicEntry, report: WitnessReport) -> None:
        """One checkpoints-topic record: follow key lists, check and cosign checkpoints."""
        if e.origin != self.origin:
            return
        if e.type is RecordType.KEY_LIST:
            try:
                kl = self.ring.add_key_list(e.value)
                log.info("%s: accepted key list v%d of %s", e.where, kl.version, self.origin)
            except (AuditError, UnicodeDecodeError) as exc:
                log.error("%s: key list of %s refused: %s", e.where, self.origin, exc)
            return
        if e.type is not RecordType.CHECKPOINT:
            return
        try:
            cp, _ = open_checkpoint(
                e.value, self.ring.verifiers(origin=self.origin), origin=self.origin
            )
        except (AuditError, UnicodeDecodeError) as exc:
            log.error(
                "%s: checkpoint not signed by the log %s; not cosigned: %s",
                e.where,
                self.origin,
                exc,
            )
            report.refused.append(f"{e.where}: {exc}")
            return
        seen = self.witness.last_seen(self.origin)
        self._check_against_leaves(cp, e.where, seen)
        if seen is not None and cp.size <= seen.size:
            # Same size, same root (else _check_against_leaves raised): cosigned before.
            report.already_seen += 1
            return
        self._cosign(e.value, cp, seen, report)

    def _check_against_leaves(self, cp: Checkpoint, where: str, seen: Checkpoint | None) -> None:
        leaves = self._leaves
        assert leaves is not None
        if leaves.size < cp.size and not leaves.wait_for_size(cp.size, timeout_s=LEAVES_TIMEOUT_S):
            raise SplitViewError(
                f"SPLIT VIEW of log {self.origin}: the checkpoint at {where} signs a tree of "
                f"{cp.size} leaves (root {cp.root_hash.hex()}), but the audit partition holds "
                f"only {leaves.size} committed leaves (root {leaves.tree.root().hex()}); the log "
                "signed a history that is not the one in Kafka",
                origin=self.origin,
                size1=leaves.size,
                root1=leaves.tree.root(),
                size2=cp.size,
                root2=cp.root_hash,
            )
        actual = leaves.tree.root(cp.size)
        if actual != cp.root_hash:
            raise SplitViewError(
                f"SPLIT VIEW of log {self.origin}: the checkpoint at {where} signs root "
                f"{cp.root_hash.hex()} for size {cp.size}, but the audit partition's leaves "
                f"0..{cp.size - 1} give root {actual.hex()}"
                + (
                    f"; this witness last cosigned size {seen.size} root {seen.root_hash.hex()}"
                    if seen is not None
                    else ""
                ),
                origin=self.origin,
                size1=cp.size,
                root1=actual,
                size2=cp.size,
                root2=cp.root_hash,
            )

    def _cosign(
        self, note: bytes, cp: Checkpoint, seen: Checkpoint | None, report: WitnessReport
    ) -> None:
        leaves, producer = self._leaves, self._producer
        assert leaves is not None and producer is not None
        old_size = seen.size if seen is not None else 0
        proof = leaves.tree.consistency_proof(old_size, cp.size)
        try:
            line = self.witness.cosign(
                note, proof, self.ring.verifiers(origin=self.origin), old_size=old_size
            )
        except StaleCheckpointError:  # pragma: no cover - sizes were compared above
            report.already_seen += 1
            return
        cosigned = add_cosignatures(note, [line])
        producer.send(
            self.topics.audit_checkpoints,
            cosigned,
            key=self.origin.encode(),
            headers=cosignature_headers(
                self.origin, self.shard, cp.size, self.witness.name, self.witness.vkey
            ),
            partition=0,
        ).get()
        report.cosigned.append(cp)
        log.info("cosigned %s size %d root %s", self.origin, cp.size, cp.root_hash.hex())

    def close(self) -> None:
        for c in (self._topic, self._leaves, self._producer):
            if c is not None:
                c.close()

    def __enter__(self) -> KafkaWitness:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
