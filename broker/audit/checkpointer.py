"""The checkpointer: replays a shard's audit partition, signs checkpoints, publishes them.

Several router processes write leaves to one audit partition inside their own
Kafka transactions, so none of them can know a leaf's index. The issue's
answer: "A checkpointer reads committed leaves in order and assigns indices".
This service does that, for one shard:

1. On start it reads the checkpoints topic (:mod:`broker.audit.stream` has the
   record layout) for its origin's key lists and last checkpoint, and replays
   the audit partition from offset 0 with ``read_committed`` (no consumer
   group: the tree is rebuilt from the partition, which never expires). The
   replayed tree must reproduce the last published root, or the stored log
   was altered and :class:`~broker.audit.exceptions.BrokenLogError` stops it.
2. It appends every committed leaf. A record that is not an audit batch, or
   a leaf that is not canonical, is not skipped: the log is broken there, and
   it stops with the record's ``topic[partition]@offset``.
3. Whenever the tree has grown it publishes a signed checkpoint (C2SP
   tlog-checkpoint as a C2SP signed note, origin from
   :func:`~broker.audit.checkpoint.origin_for_shard`), at most every
   ``interval_s`` (default 1 s), so while leaves arrive a new checkpoint
   follows within about a second. At start it publishes one if the tree grew
   since the last published checkpoint.

Checkpoints are written with a transactional producer whose id is fixed per
shard (``<checkpointer group>.<shard>``): a second checkpointer of the same
shard, or a key rotation, fences the older one (KIP-98), which then stops with
:class:`~broker.kafka.exceptions.ProducerFencedError` instead of racing it.

Keys (:mod:`broker.audit.keystore`): the signing key is created on first use
as ``Settings.home/keys/audit-log.skey`` (mode 0600) with its public key,
the auditors' trust anchor, in ``audit-log.vkey``. The signed key list
(:mod:`broker.audit.keys`) is published to the checkpoints topic, so auditors
and witnesses follow rotations from Kafka. Version 1 lists the first key as
valid from time 0: leaves routed before the checkpointer first ran are signed
by it too.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from broker.audit.checkpoint import Checkpoint, origin_for_shard, sign_checkpoint
from broker.audit.exceptions import AuditError, BrokenLogError, VerificationError
from broker.audit.keys import KeyList, KeyRing, initial_key_list, rotate
from broker.audit.keystore import LogKeyStore
from broker.audit.leaf import AuditLeaf, encode_batch
from broker.audit.note import Ed25519Signer
from broker.audit.stream import (
    LeafReader,
    PublishedLog,
    checkpoint_headers,
    key_list_headers,
    read_log,
    read_published,
)
from broker.clock import Clock, SystemClock
from broker.config import Settings
from broker.kafka.producer import Producer, make_producer
from broker.topics import Topics

__all__ = ["Checkpointer", "Published", "read_log"]

log = logging.getLogger(__name__)

DEFAULT_INTERVAL_S = 1.0


@dataclass(frozen=True)
class Published:
    """A checkpoint this process published (or found published at start)."""

    note: bytes
    checkpoint: Checkpoint


class Checkpointer:
    """Signs and publishes checkpoints of one audit shard. See the module docstring."""

    def __init__(
        self,
        *,
        bootstrap: str,
        topics: Topics,
        keys: LogKeyStore,
        clock: Clock,
        shard: int = 0,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> None:
        self.bootstrap = bootstrap
        self.topics = topics
        self.shard = shard
        self.origin = origin_for_shard(shard)
        if keys.origin != self.origin:
            raise AuditError(f"key store is for {keys.origin}, not {self.origin}")
        self.keys = keys
        self.clock = clock
        self.interval_s = interval_s
        self._producer: Producer | None = None
        self._reader: LeafReader | None = None
        self._signer: Ed25519Signer | None = None
        self._key_list: KeyList | None = None
        self._last: Published | None = None
        self._last_publish_at = float("-inf")

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        bootstrap: str,
        *,
        shard: int = 0,
        clock: Clock | None = None,
        interval_s: float = DEFAULT_INTERVAL_S,
    ) -> Checkpointer:
        """A checkpointer with its keys in ``settings.keys_dir``."""
        origin = origin_for_shard(shard)
        return cls(
            bootstrap=bootstrap,
            topics=settings.topics,
            keys=LogKeyStore(settings.keys_dir, origin=origin, shard=shard),
            clock=clock or SystemClock(),
            shard=shard,
            interval_s=interval_s,
        )

    # -- state ---------------------------------------------------------------------

    @property
    def size(self) -> int:
        """Leaves read so far (the tree size)."""
        return self._reader.size if self._reader is not None else 0

    @property
    def last_published(self) -> Published | None:
        return self._last

    @property
    def signer(self) -> Ed25519Signer:
        self.start()
        assert self._signer is not None
        return self._signer

    @property
    def key_list(self) -> KeyList:
        self.start()
        assert self._key_list is not None
        return self._key_list

    @property
    def transactional_id(self) -> str:
        return f"{self.topics.checkpointer_group}.{self.shard}"

    # -- start ---------------------------------------------------------------------

    def start(self) -> None:
        """Load keys, read what was published, replay the partition (idempotent)."""
        if self._reader is not None:
            return
        published = read_published(self.bootstrap, self.topics, self.origin)
        ring = self._check_key_lists(published)
        latest = published.latest_key_list()
        self.keys.resolve_pending({e.vkey for e in latest.keys} if latest else set())
        self._signer = self.keys.current()
        self._producer = make_producer(
            self.bootstrap,
            transactional_id=self.transactional_id,
            client_id="safeshare-checkpointer",
        )
        self._producer.init_transactions()  # fences an older checkpointer of this shard
        if latest is None:
            kl, signed = initial_key_list(self._signer, now_ms=0)
            self._send_key_list(kl, signed)
            latest = kl
            log.info("published key list v1 of %s", self.origin)
        elif not any(e.vkey == self._signer.vkey and e.not_after_ms is None for e in latest.keys):
            raise AuditError(
                f"the key in {self.keys.current_path} ({self._signer.vkey}) is not a current key "
                f"of {self.origin} in its published key list v{latest.version}; refusing to sign "
                "with it (restore the right key file, or rotate with the old one)"
            )
        self._key_list = latest

        last = published.last_checkpoint(ring.verifiers(origin=self.origin) if ring else [])
        validate_from = last.checkpoint.size if last is not None else 0
        self._reader = LeafReader(
            self.bootstrap, self.topics, shard=self.shard, validate_from=validate_from
        )
        started = time.monotonic()
        self._reader.catch_up()
        took = time.monotonic() - started
        log.info(
            "replayed %s[%d]: %d leaves in %.2f s (%.0f leaves/s)",
            self.topics.audit,
            self.shard,
            self._reader.size,
            took,
            self._reader.size / took if took > 0 else 0.0,
        )
        if last is not None:
            self._check_replay(last.note, last.checkpoint, last.where)
            self._last = Published(last.note, last.checkpoint)
        if self._last is None or self._reader.size > self._last.checkpoint.size:
            self.publish()

    def _check_key_lists(self, published: PublishedLog) -> KeyRing | None:
        """The published key lists must chain from our trust anchor (else someone forged one).

        Returns the ring of the log's keys they establish (None: nothing published yet).
        """
        if not published.key_lists:
            return None
        anchor = self.keys.anchor()
        anchors = (
            [anchor]
            if anchor
            else [self.keys.current(create=False).vkey, *(k.vkey for k in self.keys.retired())]
        )
        ring = KeyRing(anchors)
        for version in sorted(published.key_lists):
            try:
                ring.add_key_list(published.key_lists[version])
            except VerificationError as exc:
                raise AuditError(
                    f"published key list v{version} of {self.origin} does not verify against the "
                    f"trust anchor {anchors[0]}: {exc}; refusing to sign"
                ) from exc
        return ring

    def _check_replay(self, note: bytes, cp: Checkpoint, where: str) -> None:
        reader = self._reader
        assert reader is not None
        if reader.size < cp.size:
            raise BrokenLogError(
                f"audit log broken: checkpoint of size {cp.size} was published ({where}) but the "
                f"audit partition holds only {reader.size} committed leaves; leaves were lost "
                "(was the topic deleted or truncated?)",
                where=where,
            )
        root = reader.tree.root(cp.size)
        if root != cp.root_hash:
            raise BrokenLogError(
                f"audit log broken: replaying the audit partition gives root {root.hex()} at "
                f"size {cp.size}, but the published checkpoint ({where}) signed "
                f"{cp.root_hash.hex()}: either the stored leaves were altered, or the log key "
                "signed a tree that is not this partition (a fork; is the key compromised?)",
                where=where,
            )

    # -- publishing --------------------------------------------------------------------

    def _signers(self) -> list[Ed25519Signer]:
        """The current key, plus retired keys whose window covers the newest leaf's time.

        verify_bundle accepts a checkpoint if one of its signatures is by a key
        valid at the time of the checkpoint's newest leaf. Leaves carry router
        clocks, so just after a rotation the newest leaf may predate the new
        key's window; the old key, during its overlap, covers it.
        """
        assert self._signer is not None and self._key_list is not None
        signers = [self._signer]
        newest = self._newest_leaf_time()
        windows = {e.vkey: e for e in self._key_list.keys}
        for old in self.keys.retired():
            entry = windows.get(old.vkey)
            if entry is not None and newest is not None and entry.valid_at(newest):
                signers.append(old)
        return signers

    def _newest_leaf_time(self) -> int | None:
        reader = self._reader
        if reader is None or reader.last_leaf is None:
            return None
        return AuditLeaf.from_bytes(reader.last_leaf).time_ms

    def publish(self) -> Published:
        """Sign the current tree and publish it (one transaction); return it."""
        self.start()
        reader, producer = self._reader, self._producer
        assert reader is not None and producer is not None
        cp = Checkpoint(self.origin, reader.size, reader.tree.root())
        signed = sign_checkpoint(cp, self._signers())
        with producer.transaction():
            producer.send(
                self.topics.audit_checkpoints,
                signed,
                key=self.origin.encode(),
                headers=checkpoint_headers(self.origin, self.shard, cp.size),
                partition=0,
            )
        self._last = Published(signed, cp)
        self._last_publish_at = time.monotonic()
        log.info("checkpoint %s size %d root %s", self.origin, cp.size, cp.root_hash.hex())
        return self._last

    def _send_key_list(self, kl: KeyList, signed: bytes) -> None:
        assert self._producer is not None
        with self._producer.transaction():
            self._producer.send(
                self.topics.audit_checkpoints,
                signed,
                key=self.origin.encode(),
                headers=key_list_headers(self.origin, self.shard, kl.version),
                partition=0,
            )

    def _pending(self) -> bool:
        return self._last is None or self.size > self._last.checkpoint.size

    # -- running -------------------------------------------------------------------------

    def run_once(self) -> Published:
        """Catch up to the end of the partition, publish one checkpoint if the tree grew; return
        the latest checkpoint (the one just published, or the last one if nothing was new).

        "The end" is the last stable offset now. A transaction whose commit call
        has just returned may not be in it yet: the coordinator logs the commit,
        then writes the commit markers to the partition (KIP-98); its leaves go
        into the next checkpoint.
        """
        self.start()
        assert self._reader is not None
        self._reader.catch_up()
        if self._pending():
            return self.publish()
        assert self._last is not None
        return self._last

    def run(
        self,
        *,
        idle_exit_s: float | None = None,
        stop_event: threading.Event | None = None,
        poll_ms: int = 100,
    ) -> Published | None:
        """Follow the partition and publish a checkpoint at most every ``interval_s`` while
        leaves arrive. Returns (after ``stop_event`` is set, or ``idle_exit_s`` without new
        leaves with everything published) the last checkpoint, having signed every leaf
        read by then."""
        self.start()
        reader = self._reader
        assert reader is not None
        last_leaf_at = time.monotonic()
        while stop_event is None or not stop_event.is_set():
            since = time.monotonic() - self._last_publish_at
            wait = poll_ms
            if self._pending():  # wake up when the next checkpoint is due
                wait = max(0, min(poll_ms, int((self.interval_s - since) * 1000)))
            if reader.poll(timeout_ms=wait):
                last_leaf_at = time.monotonic()
            now = time.monotonic()
            if self._pending() and now - self._last_publish_at >= self.interval_s:
                self.publish()
            elif (
                idle_exit_s is not None
                and not self._pending()
                and now - last_leaf_at >= idle_exit_s
            ):
                break
        if self._pending():  # stopping: sign what was read, so no leaf waits for the restart
            self.publish()
        return self._last

    # -- keys ------------------------------------------------------------------------------

    def rotate_key(self, *, overlap_ms: int) -> KeyList:
        """Replace the signing key; the old one stays valid for ``overlap_ms`` more.

        In one transaction: the ``KEY_ROTATION`` leaf (to this shard's audit
        partition) and the new key list signed by the old and the new key (to
        the checkpoints topic). Then the key files move (see
        :mod:`broker.audit.keystore`) and a checkpoint covering the rotation
        is published. Any other running checkpointer of this shard is fenced
        by this one and stops; restart it to pick up the new key.
        """
        self.start()
        assert self._signer is not None and self._key_list is not None
        assert self._producer is not None and self._reader is not None
        new = self.keys.stage_next()
        try:
            kl, signed, leaf = rotate(
                self._key_list,
                old_signer=self._signer,
                new_signer=new,
                now_ms=self.clock.now_ms(),
                overlap_ms=overlap_ms,
            )
            with self._producer.transaction():
                self._producer.send(self.topics.audit, encode_batch([leaf]), partition=self.shard)
                self._producer.send(
                    self.topics.audit_checkpoints,
                    signed,
                    key=self.origin.encode(),
                    headers=key_list_headers(self.origin, self.shard, kl.version),
                    partition=0,
                )
        except BaseException:
            self.keys.discard_next()
            raise
        old = self._signer
        self._signer = self.keys.promote_next()
        self._key_list = kl
        log.warning(
            "rotated the log key of %s to %s; key %08x retires in %d ms",
            self.origin,
            new.vkey,
            old.key_id,
            overlap_ms,
        )
        self._reader.catch_up()
        self.publish()
        return kl

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._producer is not None:
            self._producer.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
