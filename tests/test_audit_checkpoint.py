"""C2SP tlog-checkpoint and tlog-cosignature, and the witness that refuses split views."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from broker.audit import note
from broker.audit.checkpoint import Checkpoint, open_checkpoint, origin_for_shard, sign_checkpoint
from broker.audit.cosignature import (
    CosignatureSigner,
    CosignatureVerifier,
    Witness,
    add_cosignatures,
    cosignature_message,
    cosignature_timestamp,
    verify_cosignatures,
)
from broker.audit.exceptions import (
    KeyFormatError,
    MalformedError,
    SplitViewError,
    StaleCheckpointError,
    UnverifiedNoteError,
    VerificationError,
    WitnessConflictError,
    WitnessStateError,
)
from broker.audit.merkle import MerkleTree
from broker.audit.note import Ed25519Signer, Ed25519Verifier, Signature
from broker.clock import FixedClock

# The examples of c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature.
SPEC_TEXT = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
SPEC_COSIG_B64 = (
    "jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZ"
    "qhf5nNo0xUe+mbIUBkBIfZ+qnA=="
)


def test_spec_example_checkpoint_round_trips() -> None:
    cp = Checkpoint.parse(SPEC_TEXT)
    assert cp.origin == "example.com/behind-the-sofa"
    assert cp.size == 20852163
    assert base64.b64encode(cp.root_hash).decode() == "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="
    assert cp.extensions == ()
    assert cp.text() == SPEC_TEXT
    with_ext = SPEC_TEXT + "ext one\next two\n"
    assert Checkpoint.parse(with_ext).extensions == ("ext one", "ext two")
    assert Checkpoint.parse(with_ext).text() == with_ext


ROOT = "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I="


@pytest.mark.parametrize(
    "text",
    [
        f"origin\n5\n{ROOT}",  # no final newline
        "origin\n5\n",  # two lines
        f"\n5\n{ROOT}\n",  # empty origin
        f"origin\n05\n{ROOT}\n",  # leading zero
        f"origin\n+5\n{ROOT}\n",
        f"origin\n 5\n{ROOT}\n",
        f"origin\n5 \n{ROOT}\n",
        f"origin\n\u0665\n{ROOT}\n",  # a non-ASCII digit int() would accept
        f"origin\n1_000\n{ROOT}\n",  # underscores int() would accept
        f"origin\n{2**64}\n{ROOT}\n",
        f"origin\n-1\n{ROOT}\n",
        "origin\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",  # unpadded
        "origin\n5\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2J=\n",  # non-canonical bits
        "origin\n5\nAAAA\n",  # 3-byte root
        f"origin\n5\n{ROOT}\n\n",  # empty extension line
        f"origin\n5\n{ROOT}\nbad\x01ext\n",
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(MalformedError):
        Checkpoint.parse(text)


def test_sign_and_open_checkpoint() -> None:
    origin = origin_for_shard(0)
    assert origin == "safeshare.example/audit/0"
    log = Ed25519Signer.generate(origin)
    cp = Checkpoint(origin, 3, hashlib.sha256(b"x").digest())
    signed = sign_checkpoint(cp, [log])
    got, n = open_checkpoint(signed, [log.verifier()], origin=origin)
    assert got == cp
    assert n.sigs[0].name == origin
    with pytest.raises(VerificationError, match="expected 'safeshare.example/audit/1'"):
        open_checkpoint(signed, [log.verifier()], origin="safeshare.example/audit/1")
    other = Ed25519Signer.generate("someone.else")
    forged = note.sign(cp.text(), [other])
    with pytest.raises(VerificationError, match="not signed by that log's key"):
        open_checkpoint(forged, [log.verifier(), other.verifier()])
    with pytest.raises(UnverifiedNoteError):
        open_checkpoint(forged, [log.verifier()])
    with pytest.raises(VerificationError):
        sign_checkpoint(cp, [other])


# -- cosignatures -------------------------------------------------------------------


def test_spec_cosignature_message_and_timestamp() -> None:
    assert cosignature_message(1679315147, SPEC_TEXT) == (
        b"cosignature/v1\ntime 1679315147\n" + SPEC_TEXT.encode()
    )
    sig = Signature("witness.example.com/w1", 0, SPEC_COSIG_B64)
    assert cosignature_timestamp(sig) == 1679315147
    with pytest.raises(MalformedError):
        cosignature_message(2**63, SPEC_TEXT)


def test_transparency_dev_cosignature_vectors() -> None:
    # transparency-dev/formats note/note_cosigv1_test.go: a native 0x04 vkey and
    # the timestamp inside a cosignature (TestCoSigV1NewVerifier, TestCoSigV1Timestamp).
    v = CosignatureVerifier.from_vkey(
        "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    )
    assert (v.name, v.key_id) == ("remora.n621.de", 0xDA77ADE7)
    assert v.vkey == "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
    ok = (
        "ZGhGuQAAAABm/qTPeyKXD+R2rzyQsxPiP8mXum7qq/iF0u4vanlqJyocWODBt97w9uL+8qT7S5gx"
        "EHWWOworDcFiEBYJXORmnFBOBA=="
    )
    assert cosignature_timestamp(Signature("x", 0, ok)) == 1727964367
    plain_ed25519 = (
        "eQjRQm6eSKzFoiYalgwCPXu2y3ijtg68is9M46JKxuZB+dRfTmeQeDBoXnvxZx2ugnkyV+MUMLXpWs1h"
        "Pb/W/4xkNQY="
    )
    with pytest.raises(MalformedError):
        cosignature_timestamp(Signature("x", 0, plain_ed25519))
    # A type 0x01 key is not a cosigner key, and bad key ids are refused.
    with pytest.raises(KeyFormatError):
        CosignatureVerifier.from_vkey("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")
    with pytest.raises(KeyFormatError):
        CosignatureVerifier.from_vkey(
            "remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"
        )


def test_cosignature_bytes_are_timestamp_then_ed25519_over_the_spec_message() -> None:
    clock = FixedClock(1_700_000_000_123)
    w = CosignatureSigner.generate("witness.example/w1", clock=clock)
    assert CosignatureSigner.from_skey(w.skey, clock=clock).vkey == w.vkey
    assert CosignatureVerifier.from_vkey(w.vkey).key_id == w.key_id
    assert w.key_id == note.key_id("witness.example/w1", 0x04, w.verifier().public_key)
    signed = note.sign(SPEC_TEXT, [w])
    n = note.open(signed, [w.verifier()])
    raw = base64.b64decode(n.sigs[0].base64)
    assert int.from_bytes(raw[:4], "big") == w.key_id
    assert int.from_bytes(raw[4:12], "big") == 1_700_000_000
    # Independent check with the raw primitive: Ed25519 over the spec's message.
    Ed25519PublicKey.from_public_bytes(w.verifier().public_key).verify(
        raw[12:], b"cosignature/v1\ntime 1700000000\n" + SPEC_TEXT.encode()
    )
    # The same key as a plain Ed25519 note key has another key id: not accepted.
    plain = Ed25519Verifier(name="witness.example/w1", public_key=w.verifier().public_key)
    with pytest.raises(UnverifiedNoteError):
        note.open(signed, [plain])
    # Extension lines are covered by the cosignature.
    ext = note.sign(SPEC_TEXT + "Extendo\n", [w])
    tampered = ext.replace(b"Extendo", b"Extendx")
    with pytest.raises(VerificationError):
        note.open(tampered, [w.verifier()])


# -- the witness ----------------------------------------------------------------------

ORIGIN = "safeshare.example/audit/7"


class Log:
    """A test log: a tree and its signing key."""

    def __init__(self) -> None:
        self.key = Ed25519Signer.generate(ORIGIN)
        self.tree = MerkleTree()

    def grow(self, n: int) -> None:
        for _ in range(n):
            self.tree.append(f"leaf {self.tree.size}".encode())

    def checkpoint(self, size: int | None = None) -> bytes:
        size = self.tree.size if size is None else size
        return sign_checkpoint(Checkpoint(ORIGIN, size, self.tree.root(size)), [self.key])


@pytest.fixture()
def log() -> Log:
    return Log()


@pytest.fixture()
def witness(tmp_path: Path) -> Witness:
    signer = CosignatureSigner.generate("witness.example/w1", clock=FixedClock(1_800_000_000_000))
    return Witness(signer=signer, state_path=tmp_path / "witness.json")


def test_witness_cosigns_a_growing_log_and_remembers(
    log: Log, witness: Witness, tmp_path: Path
) -> None:
    log.grow(5)
    line = witness.cosign(log.checkpoint(), [], log.key.verifier())
    assert line.startswith("— witness.example/w1 ") and line.endswith("\n")
    cosigned = add_cosignatures(log.checkpoint(), [line])
    assert verify_cosignatures(cosigned, [CosignatureVerifier.from_vkey(witness.vkey)]) == {
        "witness.example/w1": 1_800_000_000
    }
    # The log's own signature still verifies on the cosigned note.
    open_checkpoint(cosigned, [log.key.verifier()], origin=ORIGIN)

    log.grow(12)
    witness.cosign(log.checkpoint(), log.tree.consistency_proof(5), log.key.verifier())
    seen = witness.last_seen(ORIGIN)
    assert seen is not None and seen.size == 17 and seen.root_hash == log.tree.root()

    # A new witness process picks up the state file and keeps checking.
    again = Witness(
        signer=CosignatureSigner.generate("witness.example/w1", clock=FixedClock(0)),
        state_path=tmp_path / "witness.json",
    )
    assert again.last_seen(ORIGIN) == seen
    log.grow(3)
    again.cosign(log.checkpoint(), log.tree.consistency_proof(17), [log.key.verifier()])
    # Re-cosigning the same checkpoint is fine.
    again.cosign(log.checkpoint(), [], [log.key.verifier()])


def test_witness_asks_for_a_proof_from_its_own_size(log: Log, witness: Witness) -> None:
    log.grow(10)
    witness.cosign(log.checkpoint(), [], log.key.verifier(), old_size=0)
    log.grow(5)
    with pytest.raises(WitnessConflictError) as err:
        witness.cosign(
            log.checkpoint(), log.tree.consistency_proof(4), log.key.verifier(), old_size=4
        )
    assert err.value.seen_size == 10
    proof = log.tree.consistency_proof(err.value.seen_size)
    witness.cosign(log.checkpoint(), proof, log.key.verifier(), old_size=10)


def test_witness_refuses_to_go_backwards(log: Log, witness: Witness) -> None:
    log.grow(10)
    witness.cosign(log.checkpoint(), [], log.key.verifier())
    with pytest.raises(StaleCheckpointError, match="older than the size 10"):
        witness.cosign(log.checkpoint(4), [], log.key.verifier())


def test_witness_detects_same_size_different_root(
    log: Log, witness: Witness, tmp_path: Path
) -> None:
    log.grow(8)
    witness.cosign(log.checkpoint(), [], log.key.verifier())
    state_before = (tmp_path / "witness.json").read_bytes()
    fork = Log()
    fork.key = log.key  # the same (compromised or misbehaving) log key
    fork.grow(7)
    fork.tree.append(b"rewritten history")
    with pytest.raises(SplitViewError) as err:
        witness.cosign(fork.checkpoint(), [], log.key.verifier())
    msg = str(err.value)
    assert "SPLIT VIEW" in msg
    assert log.tree.root().hex() in msg and fork.tree.root().hex() in msg
    assert err.value.root1 == log.tree.root() and err.value.root2 == fork.tree.root()
    assert (tmp_path / "witness.json").read_bytes() == state_before


def test_witness_detects_a_failing_consistency_proof(log: Log, witness: Witness) -> None:
    log.grow(6)
    witness.cosign(log.checkpoint(), [], log.key.verifier())
    fork = Log()
    fork.key = log.key
    fork.grow(5)
    fork.tree.append(b"leaf 5, altered")
    fork.grow(6)
    with pytest.raises(SplitViewError) as err:
        witness.cosign(fork.checkpoint(), fork.tree.consistency_proof(6), log.key.verifier())
    assert err.value.size1 == 6 and err.value.size2 == 12
    assert log.tree.root(6).hex() in str(err.value)
    # A missing proof is as bad as a wrong one.
    log.grow(6)
    with pytest.raises(SplitViewError):
        witness.cosign(log.checkpoint(), [], log.key.verifier())
    witness.cosign(log.checkpoint(), log.tree.consistency_proof(6), log.key.verifier())


def test_witness_requires_the_log_signature(log: Log, witness: Witness) -> None:
    log.grow(3)
    impostor = Ed25519Signer.generate(ORIGIN)
    forged = sign_checkpoint(Checkpoint(ORIGIN, 3, log.tree.root()), [impostor])
    with pytest.raises(UnverifiedNoteError):
        witness.cosign(forged, [], log.key.verifier())
    assert witness.last_seen(ORIGIN) is None


def test_witness_refuses_unreadable_state(tmp_path: Path) -> None:
    path = tmp_path / "witness.json"
    path.write_text(json.dumps({"format": "something-else", "logs": {}}))
    signer = CosignatureSigner.generate("w", clock=FixedClock(0))
    with pytest.raises(WitnessStateError):
        Witness(signer=signer, state_path=path)
    path.write_text("{not json")
    with pytest.raises(WitnessStateError):
        Witness(signer=signer, state_path=path)
