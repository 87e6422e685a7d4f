"""What read_log makes of the checkpoints topic, without Kafka: PublishedLog from records."""

from __future__ import annotations

import hashlib

from broker.audit import note
from broker.audit.checkpoint import Checkpoint, origin_for_shard, sign_checkpoint
from broker.audit.cosignature import CosignatureSigner, add_cosignatures
from broker.audit.keys import initial_key_list, rotate
from broker.audit.leaf import AuditLeaf, LeafKind
from broker.audit.merkle import MerkleTree
from broker.audit.note import Ed25519Signer
from broker.audit.stream import PublishedLog, RecordType, TopicEntry
from broker.clock import FixedClock

ORIGIN = origin_for_shard(0)


def entry(kind: RecordType, value: bytes, n: int, **headers: str) -> TopicEntry:
    return TopicEntry(kind, ORIGIN, value, f"t.audit.checkpoints[0]@{n}", headers)


def leaf(i: int) -> bytes:
    return AuditLeaf(
        time_ms=i,
        kind=LeafKind.WITHHELD,
        event_id=f"e{i}",
        event_digest=hashlib.sha256(b"%d" % i).hexdigest(),
        source_agency="police-devon",
    ).to_bytes()


def test_checkpoints_come_out_in_size_order_without_duplicates_with_their_cosignatures() -> None:
    key = Ed25519Signer.generate(ORIGIN)
    tree = MerkleTree()
    tree.extend(leaf(i) for i in range(5))
    notes = {n: sign_checkpoint(Checkpoint(ORIGIN, n, tree.root(n)), [key]) for n in (2, 3, 5)}
    w = CosignatureSigner.generate("w.example/1", clock=FixedClock(1_000_000))
    raw = w.key_id.to_bytes(4, "big") + w.sign(Checkpoint(ORIGIN, 3, tree.root(3)).text().encode())
    wline = note.Signature(w.name, w.key_id, note.b64encode(raw)).line()
    published = PublishedLog(ORIGIN)
    for n, (kind, value, headers) in enumerate(
        [
            (RecordType.CHECKPOINT, notes[3], {}),
            (RecordType.CHECKPOINT, notes[2], {}),  # a slow checkpointer raced a faster one
            (RecordType.CHECKPOINT, notes[3], {}),  # published twice
            (RecordType.CHECKPOINT, b"garbage", {}),
            (RecordType.COSIGNATURE, add_cosignatures(notes[3], [wline]), {"vkey": w.vkey}),
            (RecordType.COSIGNATURE, add_cosignatures(notes[5], [wline]), {"vkey": w.vkey}),
            (RecordType.CHECKPOINT, notes[5], {}),
        ]
    ):
        published.add(entry(kind, value, n, **headers))
    cps = published.bundle_checkpoints()
    assert [c.note for c in cps] == [notes[2], notes[3], notes[5]]
    # Only the line the witness key verifies for that text is kept.
    assert [c.cosignatures for c in cps] == [(), (wline,), ()]
    assert published.witness_vkeys == [w.vkey]
    last = published.last_checkpoint()
    assert last is not None and last.checkpoint.size == 5


def test_key_lists_stop_at_the_first_rotation_not_in_the_leaves() -> None:
    k1, k2 = Ed25519Signer.generate(ORIGIN), Ed25519Signer.generate(ORIGIN)
    kl1, signed1 = initial_key_list(k1, now_ms=0)
    _, signed2, rotation = rotate(kl1, old_signer=k1, new_signer=k2, now_ms=10, overlap_ms=5)
    published = PublishedLog(ORIGIN)
    published.add(entry(RecordType.KEY_LIST, signed1, 0))
    published.add(entry(RecordType.KEY_LIST, signed2, 1))
    other = Ed25519Signer.generate(ORIGIN)
    published.add(entry(RecordType.KEY_LIST, initial_key_list(other, now_ms=0)[1], 2))  # ignored
    leaves = [leaf(0), leaf(1)]
    assert published.announced_key_lists(leaves) == [signed1]
    assert published.announced_key_lists([*leaves, rotation.to_bytes()]) == [signed1, signed2]
    latest = published.latest_key_list()
    assert latest is not None and latest.version == 2


def test_checkpoints_no_log_key_signed_are_left_out_of_an_export() -> None:
    key, stranger = Ed25519Signer.generate(ORIGIN), Ed25519Signer.generate(ORIGIN)
    tree = MerkleTree()
    tree.extend(leaf(i) for i in range(4))
    good = sign_checkpoint(Checkpoint(ORIGIN, 2, tree.root(2)), [key])
    noise = sign_checkpoint(Checkpoint(ORIGIN, 1_000_000, tree.root(4)), [stranger])
    published = PublishedLog(ORIGIN)
    published.add(entry(RecordType.KEY_LIST, initial_key_list(key, now_ms=0)[1], 0))
    published.add(entry(RecordType.CHECKPOINT, good, 1))
    published.add(entry(RecordType.CHECKPOINT, noise, 2))
    own = published.own_keys()
    assert own is not None and [v.key_id for v in own] == [key.key_id]
    assert [c.note for c in published.bundle_checkpoints(own)] == [good]
    last = published.last_checkpoint(own)
    assert last is not None and last.note == good
    # Unfiltered, the noise is the "largest" checkpoint: readers would wait for it.
    unfiltered = published.last_checkpoint()
    assert unfiltered is not None and unfiltered.note == noise
