"""An audit bundle made today, checked by the Go reference implementations.

tests/data/audit/crosscheck (golang.org/x/mod/sumdb/note for the signed notes,
transparency-dev/formats for witness cosignatures, transparency-dev/merkle for RFC
6962 hashing and proofs) used to be run by hand on the fixed golden bundle. Here it
checks a bundle built now by the project's own code, from fresh keys: the leaves
the routing core writes for the example events, checkpoints at uneven sizes, a key
rotation, a witness cosigning each checkpoint; and every inclusion and consistency
proof our MerkleTree gives for the log's sizes. An auditor's tools are not ours, so
a drift in any of these formats fails here.

Marked ``gomod``: the first run downloads the pinned modules (go.sum) from the Go
module proxy, so ``make test`` runs it and ``make check`` does not. Never skips.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from broker import config
from broker.audit.cosignature import CosignatureSigner, Witness
from broker.audit.leaf import AuditLeaf
from broker.audit.log import AuditLog
from broker.audit.note import Ed25519Signer
from broker.clock import FixedClock
from broker.routing.app import build_core
from broker.routing.core import Inbound
from tests.go_tool import GoToolError, build
from tests.helpers import CODEC, EVENTS, ROOT, example

pytestmark = pytest.mark.gomod

CROSSCHECK = ROOT / "tests" / "data" / "audit" / "crosscheck"
ORIGIN = "safeshare.example/audit/crosscheck"
NOW = 1_795_000_000_000
CHECKPOINTS = (1, 6, 17, 32)  # and the log's final size; the key rotates after 17


@pytest.fixture(scope="module")
def crosscheck(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        return build(config.load().home, CROSSCHECK, tmp_path_factory.mktemp("go") / "xcheck")
    except GoToolError as exc:
        pytest.fail(f"audit cross-check: {exc}", pytrace=False)


def _router_leaves(home: Path) -> list[bytes]:
    """The audit leaves the routing core writes for every example event, as routed."""
    settings = replace(config.load(), home=home)
    core = build_core(settings, clock=FixedClock(NOW), codec=CODEC)
    leaves: list[bytes] = []
    for offset, path in enumerate(sorted(EVENTS.glob("*.json"))):
        event = CODEC.from_json(example(path.stem))
        agency = event["source"]["agency_id"]
        topic = (core.topics.consent(agency) if path.stem == "consent_record"
                 else core.topics.ingest(agency))  # fmt: skip
        leaves += core.handle(Inbound(topic, 0, offset, None, CODEC.encode(event))).leaves
    # And one the router cannot read: a quarantine leaf.
    leaves += core.handle(Inbound(core.topics.ingest("torbay-council"), 0, 99, None,
                                  b"\xc3\x01 not an event")).leaves  # fmt: skip
    return leaves


def _bundle(tmp: Path) -> tuple[bytes, AuditLog]:
    clock = FixedClock(NOW)
    log = AuditLog(signer=Ed25519Signer(name=ORIGIN, seed=os.urandom(32)), clock=clock)
    wsigner = CosignatureSigner(name="witness.example/w1", seed=os.urandom(32), clock=clock)
    witness = Witness(signer=wsigner, state_path=tmp / "witness.json")
    leaves = _router_leaves(tmp / "home")
    assert len(leaves) > max(CHECKPOINTS) + 3, "too few leaves for the checkpoints"
    seen = 0
    for i, data in enumerate(leaves, start=1):
        clock.advance(1000)
        log.append(AuditLeaf.from_bytes(data))
        if i in CHECKPOINTS or i == len(leaves):
            cp = log.checkpoint()
            cosigned = witness.cosign(cp, log.consistency_proof(seen), log.verifiers())
            log.add_cosignature(cp, cosigned)
            seen = log.size
        if i == 17:
            log.rotate_key(Ed25519Signer(name=ORIGIN, seed=os.urandom(32)), overlap_ms=60_000)
    return log.export(witness_vkeys=(wsigner.vkey,)).to_json(), log


def _proofs(log: AuditLog) -> dict[str, list[dict[str, object]]]:
    """Every inclusion proof, and every consistency proof, our tree gives for its sizes."""
    tree, n = log.tree, log.size

    def b64(path: list[bytes]) -> list[str]:
        return [base64.b64encode(h).decode() for h in path]

    return {
        "inclusion": [{"index": i, "size": s, "proof": b64(tree.inclusion_proof(i, s))}
                      for s in range(1, n + 1) for i in range(s)],
        "consistency": [{"size1": a, "size2": b, "proof": b64(tree.consistency_proof(a, b))}
                        for b in range(1, n + 1) for a in range(1, b + 1)],
    }  # fmt: skip


def _check(binary: Path, bundle: Path, proofs: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(binary), str(bundle), str(proofs)], capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_go_reference_implementations_verify_a_bundle_and_proofs_made_now(
    crosscheck: Path, tmp_path: Path
) -> None:
    data, log = _bundle(tmp_path)
    (tmp_path / "bundle.json").write_bytes(data)
    proofs = _proofs(log)
    (tmp_path / "proofs.json").write_text(json.dumps(proofs))
    out = _check(crosscheck, tmp_path / "bundle.json", tmp_path / "proofs.json")
    assert out.returncode == 0 and out.stdout.rstrip().endswith("OK"), out.stdout + out.stderr
    checked = [line for line in out.stdout.splitlines() if line.startswith("checkpoint ")]
    assert len(checked) == len(CHECKPOINTS) + 1
    assert all("2 verified sigs (log + witness), root matches" in line for line in checked)
    assert f"{len(proofs['inclusion'])} inclusion and {len(proofs['consistency'])}" in out.stdout


def test_go_refuses_a_wrong_proof_and_a_forged_checkpoint(crosscheck: Path, tmp_path: Path) -> None:
    """The check can fail: one flipped bit in one of our proofs, or in a signed root."""
    data, log = _bundle(tmp_path)
    (tmp_path / "bundle.json").write_bytes(data)
    proofs = _proofs(log)
    bad = proofs["consistency"][len(proofs["consistency"]) // 2]
    first = bytearray(base64.b64decode(bad["proof"][0]))  # type: ignore[index]
    first[0] ^= 1
    bad["proof"][0] = base64.b64encode(bytes(first)).decode()  # type: ignore[index]
    (tmp_path / "proofs.json").write_text(json.dumps(proofs))
    out = _check(crosscheck, tmp_path / "bundle.json", tmp_path / "proofs.json")
    assert out.returncode == 1
    assert f"FAIL: our consistency proof {bad['size1']} -> {bad['size2']}" in out.stdout

    bundle = json.loads(data)
    note = bundle["checkpoints"][1]["note"].split("\n")
    root = bytearray(base64.b64decode(note[2]))
    root[-1] ^= 1
    note[2] = base64.b64encode(bytes(root)).decode()
    bundle["checkpoints"][1]["note"] = "\n".join(note)
    (tmp_path / "forged.json").write_text(json.dumps(bundle))
    (tmp_path / "none.json").write_text(json.dumps({"inclusion": [], "consistency": []}))
    out = _check(crosscheck, tmp_path / "forged.json", tmp_path / "none.json")
    assert out.returncode == 1 and out.stdout.splitlines()[-1].startswith("FAIL:"), out.stdout
