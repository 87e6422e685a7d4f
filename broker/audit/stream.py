"""How the audit log lives on Kafka, and reading it back: leaves, checkpoints, cosignatures, keys.

**The audit partition** (``topics.audit``, partition = shard). Routers write
batches of leaves (:func:`broker.audit.leaf.encode_batch`) inside their own
transactions. The shard's tree is every leaf of every *committed* record, in
offset order, and within a record in batch order (docs/DESIGN.md "Exactly once":
a share and its audit record commit together or not at all, so aborted leaves
must never enter the tree; readers use ``read_committed``). A leaf's index is
its position in that order; leaves carry no index of their own.

**The checkpoints topic** (``topics.audit_checkpoints``, one partition, never
compacted or expired). Every record::

    key      the log's origin, UTF-8 ("safeshare.example/audit/0"): one key per shard
    headers  type    "checkpoint" | "cosignature" | "key-list"
             shard   the shard number, decimal
             origin  the origin again (so a filter need not parse the key)
             size    checkpoint and cosignature: the tree size, decimal
             witness cosignature: the witness's name
             vkey    cosignature: the witness's verifier key (informational)
             version key-list: the key list version, decimal
    value    checkpoint   the signed checkpoint: C2SP tlog-checkpoint text signed as a
                          C2SP signed note by the log key(s) named after the origin
             cosignature  that same signed checkpoint with the witness's C2SP
                          tlog-cosignature line appended: a complete cosigned note,
                          verifiable on its own
             key-list     the signed key list note (:mod:`broker.audit.keys`)

Headers are for filtering; only values are verified, and nothing read from
this topic is trusted until :func:`broker.audit.verify.verify_bundle` (or a
witness) checked it. Anyone who may write here can only add noise: records
that do not parse are logged and left out.
"""

from __future__ import annotations

import bisect
import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from broker.audit import note as _note
from broker.audit.bundle import Bundle, BundleCheckpoint
from broker.audit.checkpoint import Checkpoint, open_checkpoint, origin_for_shard
from broker.audit.cosignature import CosignatureVerifier
from broker.audit.exceptions import AuditError, BrokenLogError, MalformedError
from broker.audit.keys import KeyList, KeyRing
from broker.audit.leaf import AuditLeaf, LeafKind, decode_batch
from broker.audit.merkle import MerkleTree
from broker.audit.note import NoteVerifier
from broker.kafka.consumer import Consumer, catch_up, make_consumer
from broker.kafka.structs import Record, TopicPartition
from broker.topics import Topics

__all__ = [
    "CheckpointsTopic",
    "LeafReader",
    "PublishedCheckpoint",
    "PublishedLog",
    "RecordType",
    "TopicEntry",
    "checkpoint_headers",
    "cosignature_headers",
    "key_list_headers",
    "read_log",
]

log = logging.getLogger(__name__)

#: Replay reads the whole partition: large fetches and many records per poll.
#: kafka-python checks every record batch's CRC-32C in pure Python unless the
#: ``crc32c`` package is installed (a dependency for that reason). Figures:
#: docs/PERFORMANCE.md.
_FETCH: dict[str, Any] = {
    "max_partition_fetch_bytes": 8 * 1024 * 1024,
    "fetch_max_bytes": 32 * 1024 * 1024,
    "max_poll_records": 100_000,
}
CATCH_UP_TIMEOUT_S = 120.0


class RecordType(StrEnum):
    """The ``type`` header of a checkpoints-topic record."""

    CHECKPOINT = "checkpoint"
    COSIGNATURE = "cosignature"
    KEY_LIST = "key-list"


def _headers(
    kind: RecordType, origin: str, shard: int, **more: str | int
) -> list[tuple[str, bytes]]:
    out = [
        ("type", kind.value.encode()),
        ("shard", str(shard).encode()),
        ("origin", origin.encode()),
    ]
    out += [(k, str(v).encode()) for k, v in more.items()]
    return out


def checkpoint_headers(origin: str, shard: int, size: int) -> list[tuple[str, bytes]]:
    return _headers(RecordType.CHECKPOINT, origin, shard, size=size)


def cosignature_headers(
    origin: str, shard: int, size: int, witness: str, vkey: str
) -> list[tuple[str, bytes]]:
    return _headers(RecordType.COSIGNATURE, origin, shard, size=size, witness=witness, vkey=vkey)


def key_list_headers(origin: str, shard: int, version: int) -> list[tuple[str, bytes]]:
    return _headers(RecordType.KEY_LIST, origin, shard, version=version)


def _where(r: Record) -> str:
    return f"{r.topic}[{r.partition}]@{r.offset}"


def _read_to_end(
    consumer: Consumer, tp: TopicPartition, handle: Callable[[Record], object], timeout_s: float
) -> None:
    """Read ``tp`` to its end offset as it is now (:func:`catch_up`), or raise :class:`AuditError`.

    A tree or a list of checkpoints short of the end would be taken for the
    whole log, so falling short is an error here, not a state to carry on from.
    """
    behind = catch_up(consumer, [tp], handle, timeout_s=timeout_s, poll_ms=200)
    if behind:
        position, end = behind[tp]
        raise AuditError(
            f"could not read {tp.topic}[{tp.partition}] to offset {end} within {timeout_s} s "
            f"(at {position})"
        )


# -- the audit partition ---------------------------------------------------------------


class LeafReader:
    """Replays one shard's audit partition into a :class:`MerkleTree`, then follows it.

    ``validate_from``: leaves from this index on are parsed strictly
    (:meth:`AuditLeaf.from_bytes`) before they enter the tree; earlier ones are
    only framed and hashed. The checkpointer passes the size of its last
    published checkpoint: those leaves were validated before they were signed,
    and replaying them must reproduce the signed root, which it checks. That
    keeps a restart fast (hashing runs at a few hundred thousand leaves/s,
    strict parsing at a few tens of thousands).

    ``keep_leaves``: also keep every leaf's bytes (for exports), not just hashes.
    """

    def __init__(
        self,
        bootstrap: str,
        topics: Topics,
        *,
        shard: int = 0,
        validate_from: int = 0,
        keep_leaves: bool = False,
    ) -> None:
        self.tp = TopicPartition(topics.audit, shard)
        self.tree = MerkleTree()
        self.validate_from = validate_from
        self.leaves: list[bytes] | None = [] if keep_leaves else None
        self.last_leaf: bytes | None = None
        self._starts: list[int] = []  # first leaf index of each record that held leaves
        self._offsets: list[int] = []
        self._consumer = make_consumer(
            bootstrap, group_id=None, client_id="safeshare-audit-reader", **_FETCH
        )
        self._consumer.assign([self.tp])
        self._consumer.seek_to_beginning(self.tp)

    @property
    def size(self) -> int:
        return self.tree.size

    @property
    def position(self) -> int:
        """The next offset to read."""
        return self._consumer.position(self.tp)

    def where(self, index: int) -> str:
        """``topic[partition]@offset`` of the record that holds leaf ``index``."""
        i = bisect.bisect_right(self._starts, index) - 1
        if i < 0 or index >= self.tree.size:
            return f"{self.tp.topic}[{self.tp.partition}] (leaf {index} not read)"
        return f"{self.tp.topic}[{self.tp.partition}]@{self._offsets[i]}"

    def _append(self, r: Record) -> None:
        where = _where(r)
        first = self.tree.size
        if r.value is None:
            raise BrokenLogError(
                f"audit log broken at {where}: a committed record without a value (a "
                f"tombstone) where leaf {first} should follow; nothing after it can be "
                "checkpointed until this is investigated",
                where=where,
            )
        try:
            leaves = decode_batch(r.value)
        except MalformedError as exc:
            raise BrokenLogError(
                f"audit log broken at {where}: the committed record is not an audit batch "
                f"({exc}); it would hold leaf {first} onwards, so nothing after it can be "
                "checkpointed until this is investigated",
                where=where,
            ) from exc
        if not leaves:
            return
        if first + len(leaves) > self.validate_from:
            for i, data in enumerate(leaves):
                if first + i < self.validate_from:
                    continue
                try:
                    AuditLeaf.from_bytes(data)
                except MalformedError as exc:
                    raise BrokenLogError(
                        f"audit log broken at {where}: leaf {first + i} (number {i} in the "
                        f"batch) is not a valid audit leaf: {exc}",
                        where=where,
                    ) from exc
        self._starts.append(first)
        self._offsets.append(r.offset)
        self.tree.extend(leaves)
        if self.leaves is not None:
            self.leaves.extend(leaves)
        self.last_leaf = leaves[-1]

    def poll(self, timeout_ms: int = 100) -> int:
        """Read what has been committed since; return how many leaves were appended."""
        before = self.tree.size
        for r in self._consumer.poll_records(timeout_ms=timeout_ms):
            self._append(r)
        return self.tree.size - before

    def catch_up(self, *, timeout_s: float = CATCH_UP_TIMEOUT_S) -> int:
        """Read to the partition's last stable offset; return how many leaves were appended."""
        before = self.tree.size
        _read_to_end(self._consumer, self.tp, self._append, timeout_s)
        return self.tree.size - before

    def wait_for_size(self, size: int, *, timeout_s: float) -> bool:
        """Read until the tree has ``size`` leaves (True) or ``timeout_s`` passed (False)."""
        deadline = time.monotonic() + timeout_s
        self.catch_up()
        while self.tree.size < size and time.monotonic() < deadline:
            self.poll(timeout_ms=100)
        return self.tree.size >= size

    def close(self) -> None:
        self._consumer.close()


# -- the checkpoints topic ---------------------------------------------------------------


@dataclass(frozen=True)
class TopicEntry:
    """One checkpoints-topic record, parsed only as far as its headers."""

    type: RecordType
    origin: str
    value: bytes
    where: str
    headers: dict[str, str]


def parse_entry(r: Record) -> TopicEntry | None:
    """A checkpoints-topic record, or None (logged) if it is not one of ours."""
    headers = {k: v.decode("utf-8", "replace") for k, v in r.headers}
    try:
        kind = RecordType(headers.get("type", ""))
    except ValueError:
        log.warning("%s: unknown record type %r; ignored", _where(r), headers.get("type"))
        return None
    origin = headers.get("origin") or (r.key or b"").decode("utf-8", "replace")
    if not origin or r.value is None:
        log.warning("%s: %s record without origin or value; ignored", _where(r), kind)
        return None
    return TopicEntry(kind, origin, r.value, _where(r), headers)


class CheckpointsTopic:
    """Reads ``topics.audit_checkpoints`` from the beginning (``read_committed``), then follows."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.tp = TopicPartition(topics.audit_checkpoints, 0)
        self._consumer = make_consumer(bootstrap, group_id=None, client_id="safeshare-checkpoints")
        self._consumer.assign([self.tp])
        self._consumer.seek_to_beginning(self.tp)

    def catch_up(self, *, timeout_s: float = CATCH_UP_TIMEOUT_S) -> list[TopicEntry]:
        out: list[TopicEntry] = []

        def handle(r: Record) -> None:
            e = parse_entry(r)
            if e is not None:
                out.append(e)

        _read_to_end(self._consumer, self.tp, handle, timeout_s)
        return out

    def poll(self, timeout_ms: int = 200) -> list[TopicEntry]:
        entries = (parse_entry(r) for r in self._consumer.poll_records(timeout_ms=timeout_ms))
        return [e for e in entries if e is not None]

    def close(self) -> None:
        self._consumer.close()


@dataclass(frozen=True)
class PublishedCheckpoint:
    """A checkpoint record as published (not yet verified)."""

    note: bytes
    checkpoint: Checkpoint
    where: str


@dataclass
class PublishedLog:
    """What the checkpoints topic holds for one origin, in topic order. Untrusted."""

    origin: str
    checkpoints: list[PublishedCheckpoint] = field(default_factory=list)
    cosignatures: dict[str, list[str]] = field(default_factory=dict)  # checkpoint text -> lines
    key_lists: dict[int, bytes] = field(default_factory=dict)  # version -> signed note
    witness_vkeys: list[str] = field(default_factory=list)

    def add(self, e: TopicEntry) -> None:
        """Fold one record in; records of other origins and ones that do not parse are skipped."""
        if e.origin != self.origin:
            return
        try:
            if e.type is RecordType.CHECKPOINT:
                text, _ = _note.parse(e.value)
                self.checkpoints.append(
                    PublishedCheckpoint(e.value, Checkpoint.parse(text), e.where)
                )
            elif e.type is RecordType.COSIGNATURE:
                # Keep only the line the record's own witness key verifies: a bogus
                # line under a trusted witness's name would otherwise make every
                # later verification of the bundle fail (anyone who may write
                # cosignatures could deny auditors their answer).
                vkey = e.headers.get("vkey", "")
                witness = CosignatureVerifier.from_vkey(vkey)
                text, _ = _note.parse(e.value)
                n = _note.open(e.value, [witness])
                lines = self.cosignatures.setdefault(text, [])
                for sig in n.sigs:
                    if sig.line() not in lines:
                        lines.append(sig.line())
                if vkey not in self.witness_vkeys:
                    self.witness_vkeys.append(vkey)
            else:
                text, _ = _note.parse(e.value)
                kl = KeyList.parse(text)
                if kl.origin != self.origin:
                    raise MalformedError(f"key list is for {kl.origin}")
                if kl.version in self.key_lists and self.key_lists[kl.version] != e.value:
                    log.warning(
                        "%s: a second, different key list version %d for %s; keeping the first",
                        e.where,
                        kl.version,
                        self.origin,
                    )
                    return
                self.key_lists.setdefault(kl.version, e.value)
        except (AuditError, UnicodeDecodeError) as exc:
            log.warning(
                "%s: %s record for %s does not parse (%s); ignored",
                e.where,
                e.type,
                self.origin,
                exc,
            )

    def last_checkpoint(
        self, verifiers: Sequence[NoteVerifier] | None = None
    ) -> PublishedCheckpoint | None:
        """The largest published checkpoint (the last one published at that size).

        With ``verifiers``, only checkpoints the log's keys signed count: a
        record anyone else wrote cannot make a reader wait for leaves that
        never existed.
        """
        best: PublishedCheckpoint | None = None
        for pc in self.checkpoints:
            if best is not None and pc.checkpoint.size < best.checkpoint.size:
                continue
            if verifiers is not None:
                try:
                    open_checkpoint(pc.note, verifiers, origin=self.origin)
                except (AuditError, UnicodeDecodeError):
                    log.warning("%s: checkpoint not signed by the log's keys; ignored", pc.where)
                    continue
            best = pc
        return best

    def latest_key_list(self) -> KeyList | None:
        if not self.key_lists:
            return None
        return KeyList.parse(_note.parse(self.key_lists[max(self.key_lists)])[0])

    def own_keys(self) -> list[NoteVerifier] | None:
        """The log keys its own published key lists name, or None if they do not chain.

        Not a trust decision (version 1 vouches for itself here): a filter that
        keeps records nobody with a log key wrote out of an export. Auditors
        verify the bundle against the anchor they got out of band.
        """
        if 1 not in self.key_lists:
            return None
        try:
            first = KeyList.parse(_note.parse(self.key_lists[1])[0])
            ring = KeyRing([e.vkey for e in first.keys])
            version = 1
            while version in self.key_lists:
                ring.add_key_list(self.key_lists[version])
                version += 1
        except (AuditError, UnicodeDecodeError) as exc:
            log.warning(
                "key lists of %s do not chain (%s); exporting every checkpoint", self.origin, exc
            )
            return None
        return list(ring.verifiers(origin=self.origin))

    def bundle_checkpoints(
        self, verifiers: Sequence[NoteVerifier] | None = None
    ) -> list[BundleCheckpoint]:
        """Distinct checkpoints in size order (then topic order), each with its cosignatures.

        With ``verifiers``, checkpoints none of them signed are left out (logged).
        """
        seen: set[bytes] = set()
        out: list[tuple[int, int, BundleCheckpoint]] = []
        for n, pc in enumerate(self.checkpoints):
            if pc.note in seen:
                continue
            seen.add(pc.note)
            if verifiers is not None:
                try:
                    open_checkpoint(pc.note, verifiers, origin=self.origin)
                except (AuditError, UnicodeDecodeError):
                    log.warning("%s: checkpoint not signed by the log's keys; left out", pc.where)
                    continue
            lines = tuple(self.cosignatures.get(pc.checkpoint.text(), ()))
            out.append((pc.checkpoint.size, n, BundleCheckpoint(pc.note, lines)))
        return [bc for _, _, bc in sorted(out, key=lambda t: (t[0], t[1]))]

    def announced_key_lists(self, leaves: Iterable[bytes]) -> list[bytes]:
        """Key lists 1, 2, ... as long as each rotation's ``KEY_ROTATION`` leaf is in ``leaves``.

        A rotation publishes its leaf and its key list in one transaction and
        only then checkpoints; an export cut before that checkpoint must leave
        the new key list out too, or the bundle would carry an unannounced list.
        """
        announced: set[str] = set()
        for data in leaves:
            if b'"kind":"KEY_ROTATION"' in data:
                try:
                    leaf = AuditLeaf.from_bytes(data)
                except MalformedError:
                    continue
                if leaf.kind is LeafKind.KEY_ROTATION:
                    announced.add(leaf.event_digest)
        out = []
        version = 1
        while version in self.key_lists:
            kl = self.key_lists[version]
            if version > 1 and hashlib.sha256(kl).hexdigest() not in announced:
                break
            out.append(kl)
            version += 1
        return out


def read_published(bootstrap: str, topics: Topics, origin: str) -> PublishedLog:
    """Everything the checkpoints topic holds for ``origin``, read to its end now."""
    reader = CheckpointsTopic(bootstrap, topics)
    try:
        published = PublishedLog(origin)
        for e in reader.catch_up():
            published.add(e)
        return published
    finally:
        reader.close()


def read_log(
    bootstrap: str,
    topics: Topics,
    *,
    shard: int = 0,
    origin: str | None = None,
    witness_vkeys: Sequence[str] = (),
) -> Bundle:
    """Collect a shard's log from Kafka into the offline :class:`Bundle`.

    Reads the checkpoints topic to its end first, then the audit partition
    (``read_committed``) up to the largest published checkpoint: leaves not
    yet covered by a checkpoint are left out, like :meth:`AuditLog.export`.
    Checkpoint records that no key of the log's own key lists signed are left
    out as noise (see :meth:`PublishedLog.own_keys`).
    Nothing is verified here; pass the result to
    :func:`broker.audit.verify.verify_bundle`. ``witness_vkeys`` are recorded
    in the bundle (informational); the witnesses' own ``vkey`` headers are
    added to them.
    """
    origin = origin or origin_for_shard(shard)
    published = read_published(bootstrap, topics, origin)
    own = published.own_keys()
    last = published.last_checkpoint(own)
    target = last.checkpoint.size if last is not None else 0
    leaves: list[bytes] = []
    if target:
        reader = LeafReader(bootstrap, topics, shard=shard, validate_from=2**63, keep_leaves=True)
        try:
            reader.wait_for_size(target, timeout_s=10.0)
            assert reader.leaves is not None
            leaves = reader.leaves[:target]
        finally:
            reader.close()
    key_lists = published.announced_key_lists(leaves)
    log_vkeys: list[str] = []
    for kl in key_lists:
        for entry in KeyList.parse(_note.parse(kl)[0]).keys:
            if entry.vkey not in log_vkeys:
                log_vkeys.append(entry.vkey)
    wvkeys = list(dict.fromkeys([*witness_vkeys, *published.witness_vkeys]))
    return Bundle.create(
        origin=origin,
        leaves=leaves,
        checkpoints=published.bundle_checkpoints(own),
        key_lists=key_lists,
        log_vkeys=log_vkeys,
        witness_vkeys=wvkeys,
    )
