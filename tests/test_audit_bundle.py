"""Offline bundle verification: a good log verifies, and every kind of tampering is named."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from pathlib import Path

import pytest

from broker.audit import note
from broker.audit.bundle import Bundle, BundleCheckpoint
from broker.audit.checkpoint import Checkpoint, sign_checkpoint
from broker.audit.cosignature import CosignatureSigner, Witness
from broker.audit.exceptions import VerificationError
from broker.audit.leaf import AuditLeaf, LeafKind, subject_pseudonym
from broker.audit.log import AuditLog
from broker.audit.merkle import MerkleTree
from broker.audit.note import Ed25519Signer
from broker.audit.verify import (
    SUBJECT_HISTORY,
    EventProof,
    prove_event,
    prove_leaves,
    verify_bundle,
    verify_event_proof,
    who_saw,
)
from broker.clock import FixedClock

ORIGIN = "safeshare.example/audit/0"
KEY = b"pseudonym-key-for-tests-only-32b!"
ALICE = subject_pseudonym(KEY, "child-alice")
BOB = subject_pseudonym(KEY, "child-bob")
T0 = 1_750_000_000_000


@dataclasses.dataclass
class World:
    bundle: Bundle
    first_vkey: str
    witness_vkey: str
    log: AuditLog
    clock: FixedClock


def _leaf(t: int, i: int) -> AuditLeaf:
    kinds = [
        LeafKind.SHARED,
        LeafKind.SHARED,
        LeafKind.WITHHELD,
        LeafKind.QUARANTINED,
        LeafKind.DUPLICATE,
    ]
    kind = kinds[i % len(kinds)]
    event = f"event-{i // 2}"
    return AuditLeaf(
        time_ms=t,
        kind=kind,
        event_id=event,
        event_digest=hashlib.sha256(event.encode()).hexdigest(),
        source_agency="police-devon",
        recipient=""
        if kind is LeafKind.QUARANTINED
        else ("mash-torbay" if i % 2 else "school-dsl-12"),
        outcome={"SHARED": "ALLOW", "WITHHELD": "WITHHOLD"}.get(kind.value, kind.value),
        rule_id="mash-all",
        lawful_basis="UK GDPR Art 9(2)(g); DPA 2018 Sch 1 para 18",
        data_classes_shared=["concern_summary", "location"] if kind is LeafKind.SHARED else [],
        fields_redacted=["reporter.name"],
        policy_digest=hashlib.sha256(b"policy v1").hexdigest(),
        delivered_digest=hashlib.sha256(f"copy {i}".encode()).hexdigest()
        if kind is LeafKind.SHARED
        else None,
        subject=ALICE if i % 3 else BOB,
        reason="" if kind is LeafKind.SHARED else "NOT_ENTITLED",
    )


def build_world(tmp: Path) -> World:
    clock = FixedClock(T0)
    first = Ed25519Signer.generate(ORIGIN)
    log = AuditLog(signer=first, clock=clock)
    wsigner = CosignatureSigner.generate("witness.example/w1", clock=clock)
    witness = Witness(signer=wsigner, state_path=tmp / "witness.json")
    last_size = 0
    i = 0

    def add(n: int) -> None:
        nonlocal i
        for _ in range(n):
            clock.advance(1000)
            log.append(_leaf(clock.now_ms(), i))
            i += 1

    def checkpoint() -> None:
        nonlocal last_size
        cp = log.checkpoint()
        line = witness.cosign(cp, log.consistency_proof(last_size), log.verifiers())
        log.add_cosignature(cp, line)
        last_size = log.size

    add(10)
    checkpoint()  # size 10, old key
    add(10)
    log.rotate_key(Ed25519Signer.generate(ORIGIN), overlap_ms=60_000)  # leaf 20
    add(4)
    checkpoint()  # size 25, new key
    add(15)
    checkpoint()  # size 40
    return World(log.export(witness_vkeys=(wsigner.vkey,)), first.vkey, wsigner.vkey, log, clock)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> World:
    return build_world(tmp_path_factory.mktemp("world"))


def verify(world: World, bundle: Bundle | None = None, *, quorum: int = 1):  # type: ignore[no-untyped-def]
    return verify_bundle(
        bundle if bundle is not None else world.bundle,
        [world.first_vkey],
        witness_vkeys=[world.witness_vkey],
        witness_quorum=quorum,
    )


def with_leaves(b: Bundle, leaves: list[bytes]) -> Bundle:
    return dataclasses.replace(b, leaves=tuple(leaves))


# -- the good log ------------------------------------------------------------------------


def test_a_good_bundle_verifies(world: World, tmp_path: Path) -> None:
    report = verify(world)
    assert report.tree_size == 40 and report.checkpoints == 3
    assert report.key_list_version == 2 and len(report.signing_keys) == 2
    assert report.witnesses == ("witness.example/w1",) and report.min_cosignatures == 1
    assert report.root_hash == world.log.tree.root(40)
    assert report.leaves[20].kind is LeafKind.KEY_ROTATION
    assert "40 leaves verified" in report.summary()
    # Through a file, byte for byte.
    world.bundle.write(tmp_path / "bundle.json")
    again = Bundle.read(tmp_path / "bundle.json")
    assert again == world.bundle
    assert verify(world, again).root_hash == report.root_hash
    # Without witnesses it still verifies the log itself.
    verify_bundle(world.bundle, [world.first_vkey])


def test_untrusted_log_key_is_refused(world: World) -> None:
    stranger = Ed25519Signer.generate(ORIGIN)
    with pytest.raises(VerificationError, match="key list 0 does not verify"):
        verify_bundle(world.bundle, [stranger.vkey])


def test_witness_quorum_is_enforced(world: World) -> None:
    with pytest.raises(
        VerificationError,
        match="checkpoint 0 \\(size 10\\) has 1 valid witness cosignatures; 2 required",
    ):
        verify(world, quorum=2)
    no_cosigs = dataclasses.replace(
        world.bundle, checkpoints=tuple(BundleCheckpoint(c.note) for c in world.bundle.checkpoints)
    )
    with pytest.raises(VerificationError, match="checkpoint 0 .* 0 valid witness"):
        verify(world, no_cosigs)


# -- tampering with leaves ----------------------------------------------------------------


def test_flipping_any_byte_of_a_leaf_fails_and_names_the_place(world: World) -> None:
    leaves = list(world.bundle.leaves)
    target = 17  # covered by checkpoint 1 (size 25), after checkpoint 0 (size 10)
    original = leaves[target]
    for pos in range(len(original)):
        for mask in (0x01, 0x20):
            tampered = bytearray(original)
            tampered[pos] ^= mask
            leaves[target] = bytes(tampered)
            with pytest.raises(VerificationError) as err:
                verify(world, with_leaves(world.bundle, leaves))
            msg = str(err.value)
            assert f"leaf {target} " in msg or "at an index in 10..24" in msg, (pos, mask, msg)
    leaves[target] = original


# Leaves carry no index: deletion, reordering and insertion are caught by the
# signed roots, and the verifier names the first bad place as well as it can.


def test_deleting_a_leaf_is_bounded_by_the_checkpoints(world: World) -> None:
    leaves = list(world.bundle.leaves)
    del leaves[17]
    with pytest.raises(
        VerificationError,
        match="checkpoint 1 \\(size 25\\) does not match the leaves.*at an index in 10..24 "
        "\\(the bundle holds 39 leaves but a checkpoint claims 40: 1 or more are missing\\)",
    ):
        verify(world, with_leaves(world.bundle, leaves))


def test_reordering_leaves_is_named(world: World) -> None:
    leaves = list(world.bundle.leaves)
    leaves[17], leaves[18] = leaves[18], leaves[17]
    with pytest.raises(VerificationError, match="leaves 17 and 18 are out of order"):
        verify(world, with_leaves(world.bundle, leaves))


def test_inserting_a_leaf_is_named(world: World) -> None:
    leaves = list(world.bundle.leaves)
    forged = _leaf(T0, 99).to_bytes()
    with pytest.raises(VerificationError, match="leaf 17 is not in the signed log.*inserted at 17"):
        verify(world, with_leaves(world.bundle, leaves[:17] + [forged] + leaves[17:]))
    # Before the first checkpoint too.
    with pytest.raises(VerificationError, match="leaf 0 is not in the signed log"):
        verify(world, with_leaves(world.bundle, [forged, *leaves]))


def test_altering_a_leaf_canonically_is_bounded_by_the_checkpoints(world: World) -> None:
    leaves = [AuditLeaf.from_bytes(b) for b in world.bundle.leaves]
    leaves[17] = dataclasses.replace(leaves[17], recipient="someone-else")
    with pytest.raises(
        VerificationError,
        match="checkpoint 1 \\(size 25\\) does not match the leaves.*at an index in 10..24$",
    ):
        verify(world, with_leaves(world.bundle, [leaf.to_bytes() for leaf in leaves]))


def test_a_range_too_wide_to_search_is_still_bounded(tmp_path: Path) -> None:
    from broker.audit import verify as verify_mod

    clock = FixedClock(T0)
    signer = Ed25519Signer.generate(ORIGIN)
    log = AuditLog(signer=signer, clock=clock)
    for i in range(verify_mod.LOCATE_LIMIT + 10):
        log.append(_leaf(T0 + i, i))
    log.checkpoint()
    bundle = log.export()
    leaves = list(bundle.leaves)
    leaves[3], leaves[4] = leaves[4], leaves[3]
    with pytest.raises(VerificationError, match=f"at an index in 0..{len(leaves) - 1}$"):
        verify_bundle(with_leaves(bundle, leaves), [signer.vkey])


def test_missing_and_unsigned_leaves(world: World) -> None:
    leaves = list(world.bundle.leaves)
    with pytest.raises(
        VerificationError,
        match="checkpoint 2 \\(size 40\\) covers more leaves than the bundle holds \\(39\\): "
        "1 or more leaves are missing; the first missing or altered leaf is at an index in 25..39",
    ):
        verify(world, with_leaves(world.bundle, leaves[:-1]))
    extra = _leaf(T0 + 10**6, 7).to_bytes()
    with pytest.raises(
        VerificationError, match="leaves 40..40 are not covered by any signed checkpoint"
    ):
        verify(world, with_leaves(world.bundle, [*leaves, extra]))


# -- tampering with checkpoints and signatures ---------------------------------------------


def _replace_checkpoint(b: Bundle, j: int, new: BundleCheckpoint) -> Bundle:
    cps = list(b.checkpoints)
    cps[j] = new
    return dataclasses.replace(b, checkpoints=tuple(cps))


def test_replacing_a_checkpoint_with_an_impostors_is_named(world: World) -> None:
    impostor = Ed25519Signer.generate(ORIGIN)
    fake = sign_checkpoint(Checkpoint(ORIGIN, 25, world.log.tree.root(25)), [impostor])
    with pytest.raises(
        VerificationError, match="checkpoint 1 does not verify: note has no verifiable signatures"
    ):
        verify(world, _replace_checkpoint(world.bundle, 1, BundleCheckpoint(fake)))


def test_replacing_a_checkpoint_with_another_history_is_named(world: World) -> None:
    # The log's real (current) key signs a checkpoint of a different history.
    fork = MerkleTree()
    fork.extend(world.bundle.leaves[:24])
    fork.append(b"another leaf 24")
    current = world.log._signer  # noqa: SLF001 - the log operator's own key
    fake = sign_checkpoint(Checkpoint(ORIGIN, 25, fork.root()), [current])
    with pytest.raises(
        VerificationError, match="checkpoint 1 \\(size 25\\) does not match the leaves"
    ):
        verify(world, _replace_checkpoint(world.bundle, 1, BundleCheckpoint(fake)), quorum=0)


def test_forging_a_checkpoint_signature_is_named(world: World) -> None:
    bc = world.bundle.checkpoints[2]
    text, sigs = note.parse(bc.note)
    sig, raw = sigs[0]
    forged_raw = bytes([raw[0] ^ 1]) + raw[1:]
    forged_sig = note.Signature(
        sig.name, sig.key_id, base64.b64encode(sig.key_id.to_bytes(4, "big") + forged_raw).decode()
    )
    forged = (text + "\n" + forged_sig.line()).encode()
    with pytest.raises(
        VerificationError, match="checkpoint 2 does not verify: invalid signature for key"
    ):
        verify(
            world, _replace_checkpoint(world.bundle, 2, BundleCheckpoint(forged, bc.cosignatures))
        )
    # Editing the signed text (the size) is caught by the signature too.
    edited = bc.note.replace(b"\n40\n", b"\n39\n", 1)
    with pytest.raises(VerificationError, match="checkpoint 2 does not verify"):
        verify(
            world, _replace_checkpoint(world.bundle, 2, BundleCheckpoint(edited, bc.cosignatures))
        )


def test_forging_a_cosignature_is_named(world: World) -> None:
    bc = world.bundle.checkpoints[1]
    line = bc.cosignatures[0]
    name, b64 = line[2:-1].split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[-1] ^= 1
    bad = f"— {name} {base64.b64encode(bytes(raw)).decode()}\n"
    with pytest.raises(
        VerificationError, match="checkpoint 1 \\(size 25\\): a witness cosignature does not verify"
    ):
        verify(world, _replace_checkpoint(world.bundle, 1, BundleCheckpoint(bc.note, (bad,))))


def test_checkpoints_out_of_order_are_named(world: World) -> None:
    cps = list(world.bundle.checkpoints)
    cps[1], cps[2] = cps[2], cps[1]
    with pytest.raises(
        VerificationError, match="checkpoint 2 \\(size 25\\) is smaller than checkpoint 1"
    ):
        verify(world, dataclasses.replace(world.bundle, checkpoints=tuple(cps)))


# -- keys ------------------------------------------------------------------------------------


def test_rotation_must_be_in_the_log_and_in_the_bundle(world: World) -> None:
    without_list = dataclasses.replace(world.bundle, key_lists=world.bundle.key_lists[:1])
    with pytest.raises(VerificationError, match="leaf 20 announces a key rotation"):
        verify(world, without_list)
    leaves = [AuditLeaf.from_bytes(b) for b in world.bundle.leaves]
    leaves[20] = dataclasses.replace(leaves[20], event_digest=hashlib.sha256(b"other").hexdigest())
    with pytest.raises(VerificationError, match="leaf 20 announces a key rotation"):
        verify(world, with_leaves(world.bundle, [x.to_bytes() for x in leaves]))


def test_a_key_list_signed_by_a_stranger_is_refused(world: World) -> None:
    stranger = Ed25519Signer.generate(ORIGIN)
    text, _ = note.parse(world.bundle.key_lists[1])
    forged = note.sign(text.replace("\n2\n", "\n2\n", 1), [stranger])
    kls = (world.bundle.key_lists[0], forged)
    with pytest.raises(VerificationError, match="key list 1 does not verify"):
        verify(world, dataclasses.replace(world.bundle, key_lists=kls))


def test_old_key_outside_its_window_is_refused(tmp_path: Path) -> None:
    clock = FixedClock(T0)
    first = Ed25519Signer.generate(ORIGIN)
    log = AuditLog(signer=first, clock=clock)
    log.append(_leaf(clock.now_ms(), 0))
    log.checkpoint()
    log.rotate_key(Ed25519Signer.generate(ORIGIN), overlap_ms=1000)
    clock.advance(10_000)
    log.append(_leaf(clock.now_ms(), 2))
    log.checkpoint()
    good = log.export()
    assert verify_bundle(good, [first.vkey]).tree_size == 3
    late = sign_checkpoint(Checkpoint(ORIGIN, 3, log.tree.root()), [first])
    bad = _replace_checkpoint(good, 1, BundleCheckpoint(late))
    with pytest.raises(
        VerificationError,
        match="checkpoint 1 \\(size 3\\) is signed only by keys outside their validity window",
    ):
        verify_bundle(bad, [first.vkey])


# -- event proofs and who saw -------------------------------------------------------------------


def test_prove_event_and_verify_offline(world: World) -> None:
    proofs = prove_event(world.bundle, "event-9")
    assert [p.index for p in proofs] == [18, 19]
    for p in proofs:
        leaf = verify_event_proof(
            p, _ring(world), witness_vkeys=[world.witness_vkey], witness_quorum=1
        )
        assert leaf.event_id == "event-9"
        again = EventProof.from_json_value(json.loads(json.dumps(p.to_json_value())))
        assert verify_event_proof(again, _ring(world)) == leaf
    p = proofs[0]
    bad_leaf = dataclasses.replace(p, leaf=p.leaf.replace(b"police-devon", b"police-dorse"))
    with pytest.raises(
        VerificationError,
        match="inclusion proof for leaf 18 in a tree of size 40 does not verify: expected root",
    ):
        verify_event_proof(bad_leaf, _ring(world))
    bad_index = dataclasses.replace(p, index=17)
    with pytest.raises(VerificationError):
        verify_event_proof(bad_index, _ring(world))
    assert prove_event(world.bundle, "no-such-event") == []


def _ring(world: World):  # type: ignore[no-untyped-def]
    from broker.audit.keys import KeyRing

    ring = KeyRing([world.first_vkey])
    for kl in world.bundle.key_lists:
        ring.add_key_list(kl)
    return ring


def test_who_saw_lists_shares_and_withholdings_about_one_subject(world: World) -> None:
    seen = who_saw(world.bundle, ALICE, T0, T0 + 10**9, trusted_vkeys=[world.first_vkey])
    parsed = [AuditLeaf.from_bytes(b) for b in world.bundle.leaves]
    expected = [
        (i, leaf)
        for i, leaf in enumerate(parsed)
        if leaf.kind in (LeafKind.SHARED, LeafKind.WITHHELD) and leaf.subject == ALICE
    ]
    assert [(s.index, s.leaf) for s in seen] == expected
    assert {s.leaf.kind for s in seen} == {LeafKind.SHARED, LeafKind.WITHHELD}
    window = who_saw(
        world.bundle,
        ALICE,
        seen[1].leaf.time_ms,
        seen[2].leaf.time_ms,
        trusted_vkeys=[world.first_vkey],
    )
    assert window == [seen[1]]
    assert {s.leaf.recipient for s in seen} <= {"mash-torbay", "school-dsl-12"}
    shares = who_saw(
        world.bundle, ALICE, 0, 2**53, trusted_vkeys=[world.first_vkey], kinds=[LeafKind.SHARED]
    )
    assert [s.leaf for s in shares] == [s.leaf for s in seen if s.leaf.kind is LeafKind.SHARED]
    # Each sighting's index proves offline.
    for proof in prove_leaves(world.bundle, [s.index for s in seen]):
        assert verify_event_proof(proof, _ring(world)).subject == ALICE
    leaves = list(world.bundle.leaves)
    leaves[3] = leaves[3].replace(b"police-devon", b"police-dorse")
    with pytest.raises(VerificationError):
        who_saw(
            with_leaves(world.bundle, leaves), ALICE, 0, 2**53, trusted_vkeys=[world.first_vkey]
        )


def test_who_saw_answers_for_the_whole_of_a_linked_child(tmp_path: Path) -> None:
    """A person linked BOB into ALICE: a subject-access answer about either is the
    whole child (every decision under both keyed pseudonyms, and the link itself
    in the history); after the unlink, each is its own child again."""
    clock = FixedClock(T0)
    signer = Ed25519Signer.generate(ORIGIN)
    log = AuditLog(signer=signer, clock=clock)
    for i in range(6):
        clock.advance(1000)
        log.append(_leaf(clock.now_ms(), i))  # ALICE's and BOB's shares and withholdings

    def identity(kind: LeafKind) -> AuditLeaf:
        clock.advance(1000)
        return AuditLeaf(
            time_ms=clock.now_ms(), kind=kind, event_id=f"decision-{kind.value}",
            event_digest=hashlib.sha256(kind.value.encode()).hexdigest(),
            source_agency="mash-torbay", subject=ALICE, outcome=kind.value[:-2],
            rule_id="identity.deciders", policy_digest=hashlib.sha256(b"policy v1").hexdigest(),
            identity_other=BOB, identity_decided_by=hashlib.sha256(b"who").hexdigest(),
            identity_shares=[],
        )  # fmt: skip

    def decisions(who: str, kinds: object = (LeafKind.SHARED, LeafKind.WITHHELD)) -> set[str]:
        log.checkpoint()
        seen = who_saw(log.export(), who, 0, 2**53, trusted_vkeys=[signer.vkey],
                       kinds=kinds)  # type: ignore[arg-type]
        return {f"{s.leaf.kind.value} {s.leaf.event_id} {s.leaf.recipient}" for s in seen}

    alice, bob = decisions(ALICE), decisions(BOB)
    assert alice and bob and not alice & bob
    log.append(identity(LeafKind.LINKED))
    assert decisions(ALICE) == decisions(BOB) == alice | bob
    history = decisions(BOB, SUBJECT_HISTORY)
    assert "LINKED decision-LINKED " in history and alice | bob <= history
    log.append(identity(LeafKind.UNLINKED))
    assert (decisions(ALICE), decisions(BOB)) == (alice, bob)
