"""A fixed, deterministic bundle: the bytes other implementations can check us against.

tests/data/audit/golden_bundle.json is built from fixed key seeds and a fixed
clock (Ed25519 signatures are deterministic), so any change to a format shows
up here as a byte difference. tests/data/audit/README.md says how to check the
file with independent tools. Regenerate only for an intended format change::

    SAFESHARE_REGENERATE_GOLDEN=1 .venv/bin/python -m pytest tests/test_audit_golden.py
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from broker.audit.bundle import Bundle
from broker.audit.cosignature import CosignatureSigner, Witness
from broker.audit.leaf import AuditLeaf, LeafKind, subject_pseudonym
from broker.audit.log import AuditLog
from broker.audit.merkle import hash_leaf
from broker.audit.note import Ed25519Signer
from broker.audit.verify import verify_bundle
from broker.clock import FixedClock

DATA = Path(__file__).parent / "data/audit"
ORIGIN = "safeshare.example/audit/golden"
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _seed(label: str) -> bytes:
    return hashlib.sha256(f"safeshare golden test vector: {label}".encode()).digest()


def build(tmp: Path) -> tuple[Bundle, dict[str, object]]:
    clock = FixedClock(T0)
    key1 = Ed25519Signer(name=ORIGIN, seed=_seed("log key 1"))
    key2 = Ed25519Signer(name=ORIGIN, seed=_seed("log key 2"))
    wsigner = CosignatureSigner(name="witness.example/golden", seed=_seed("witness"), clock=clock)
    witness = Witness(signer=wsigner, state_path=tmp / "witness.json")
    log = AuditLog(signer=key1, clock=clock)
    pkey = _seed("pseudonym key")
    seen = 0

    def add(kind: LeafKind, recipient: str, subject: str) -> None:
        clock.advance(1000)
        i = log.size
        shared = kind is LeafKind.SHARED
        log.append(
            AuditLeaf(
                time_ms=clock.now_ms(),
                kind=kind,
                event_id=f"00000000-0000-4000-8000-{i:012d}",
                event_digest=hashlib.sha256(f"event {i}".encode()).hexdigest(),
                source_agency="police-devon",
                recipient=recipient,
                outcome="ALLOW" if kind is LeafKind.SHARED else kind.value,
                rule_id="mash-all" if recipient else "",
                lawful_basis="DPA 2018 Sch 8 para 4" if kind is LeafKind.SHARED else "",
                data_classes_shared=["location", "concern_summary"] if shared else [],
                fields_redacted=["reporter.name"] if recipient else [],
                policy_digest=hashlib.sha256(b"policy").hexdigest(),
                consent_ref=None,
                delivered_digest=(
                    hashlib.sha256(f"copy {i}".encode()).hexdigest()
                    if kind is LeafKind.SHARED
                    else None
                ),
                subject=subject_pseudonym(pkey, subject) if subject else "",
                reason="" if kind is LeafKind.SHARED else "NOT_ENTITLED",
                obligations=["review within 72h"] if kind is LeafKind.SHARED else [],
            )
        )

    def checkpoint() -> None:
        nonlocal seen
        cp = log.checkpoint()
        log.add_cosignature(cp, witness.cosign(cp, log.consistency_proof(seen), log.verifiers()))
        seen = log.size

    add(LeafKind.SHARED, "mash-torbay", "child-a")
    add(LeafKind.WITHHELD, "school-dsl-12", "child-a")
    add(LeafKind.QUARANTINED, "", "")
    add(LeafKind.SHARED, "police-cse", "child-b")
    checkpoint()
    clock.advance(1000)
    log.rotate_key(key2, overlap_ms=3_600_000)
    add(LeafKind.DUPLICATE, "", "child-b")
    add(LeafKind.SHARED, "health-visitor", "child-a")
    checkpoint()
    bundle = log.export(witness_vkeys=(wsigner.vkey,))
    expect = {
        "origin": ORIGIN,
        "trusted_log_vkey": key1.vkey,
        "witness_vkey": wsigner.vkey,
        "tree_size": log.size,
        "roots_hex": {str(n): log.tree.root(n).hex() for n in (4, log.size)},
        "leaf_hashes_hex": [hash_leaf(b).hex() for b in bundle.leaves],
    }
    return bundle, expect


def test_golden_bundle_is_byte_stable(tmp_path: Path) -> None:
    bundle, expect = build(tmp_path)
    got_bundle = bundle.to_json()
    got_expect = json.dumps(expect, indent=1).encode() + b"\n"
    if os.environ.get("SAFESHARE_REGENERATE_GOLDEN"):
        (DATA / "golden_bundle.json").write_bytes(got_bundle)
        (DATA / "golden_expect.json").write_bytes(got_expect)
    assert got_bundle == (DATA / "golden_bundle.json").read_bytes()
    assert got_expect == (DATA / "golden_expect.json").read_bytes()


def test_golden_bundle_verifies_from_the_file() -> None:
    expect = json.loads((DATA / "golden_expect.json").read_text())
    bundle = Bundle.read(DATA / "golden_bundle.json")
    report = verify_bundle(
        bundle,
        [expect["trusted_log_vkey"]],
        witness_vkeys=[expect["witness_vkey"]],
        witness_quorum=1,
    )
    assert report.tree_size == expect["tree_size"]
    assert report.root_hash.hex() == expect["roots_hex"][str(expect["tree_size"])]
    assert [hash_leaf(b).hex() for b in bundle.leaves] == expect["leaf_hashes_hex"]
