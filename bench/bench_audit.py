"""Audit log throughput on this machine. Prints figures; never passes or fails.

    .venv/bin/python bench/bench_audit.py [--leaves N]

Rates are per core: CPU time of this process, best of three runs.
Each figure is printed for people and once more as a machine-readable line::

    BENCH {"name": "...", "value": ..., "unit": "..."}
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint  # noqa: E402
from broker.audit.leaf import AuditLeaf, LeafKind, subject_pseudonym  # noqa: E402
from broker.audit.log import AuditLog  # noqa: E402
from broker.audit.merkle import MerkleTree, hash_leaf, verify_inclusion  # noqa: E402
from broker.audit.note import Ed25519Signer  # noqa: E402
from broker.audit.verify import verify_bundle  # noqa: E402
from broker.clock import FixedClock  # noqa: E402


def report(name: str, value: float, unit: str, note: str = "") -> None:
    print(f"{name:<42} {value:>14,.0f} {unit}{'  (' + note + ')' if note else ''}")
    print("BENCH " + json.dumps({"name": name, "value": round(value, 1), "unit": unit}))


def timed(fn: Callable[[], object]) -> float:
    """CPU seconds of this process (per-core cost; other work on the machine
    inflates wall time, not this). The best of three runs."""
    best = float("inf")
    for _ in range(3):
        start = time.process_time()
        fn()
        best = min(best, time.process_time() - start)
    return best


def make_leaves(n: int) -> list[AuditLeaf]:
    key = b"bench-pseudonym-key-32-bytes-long"
    policy = hashlib.sha256(b"policy").hexdigest()
    out = []
    for i in range(n):
        out.append(
            AuditLeaf(
                time_ms=1_750_000_000_000 + i,
                kind=LeafKind.SHARED,
                event_id=f"5f0c1e8e-9a49-4d1c-8d57-{i:012d}",
                event_digest=hashlib.sha256(i.to_bytes(8, "big")).hexdigest(),
                source_agency="police-devon",
                recipient="mash-torbay",
                outcome="ALLOW",
                rule_id="mash-all",
                lawful_basis="UK GDPR Art 9(2)(g); DPA 2018 Sch 1 para 18",
                data_classes_shared=("concern_summary", "location"),
                fields_redacted=("reporter.contact", "reporter.name"),
                policy_digest=policy,
                delivered_digest=hashlib.sha256(b"copy" + i.to_bytes(8, "big")).hexdigest(),
                subject=subject_pseudonym(key, f"child-{i % 997}"),
                obligations=("review within 72h",),
            )
        )
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--leaves", type=int, default=200_000)
    args = ap.parse_args()
    n: int = args.leaves

    leaves = make_leaves(min(n, 20_000))
    t = timed(lambda: [leaf.to_bytes() for leaf in leaves])
    report("leaf canonical serialisation", len(leaves) / t, "leaves/s")
    blobs = [leaf.to_bytes() for leaf in leaves]
    t = timed(lambda: [AuditLeaf.from_bytes(b) for b in blobs])
    report("leaf strict parse (from_bytes)", len(blobs) / t, "leaves/s")
    size = sum(map(len, blobs)) / len(blobs)
    # Repeat the real leaf bytes, each made unique by a 4-byte suffix, up to n.
    data = [blobs[i % len(blobs)] + i.to_bytes(4, "big") for i in range(n)]

    def append_all() -> MerkleTree:
        tree = MerkleTree()
        for d in data:
            tree.append(d)
        return tree

    t = timed(append_all)
    report("merkle append (one at a time)", n / t, "leaves/s", f"{n} leaves of ~{size:.0f} bytes")

    def replay() -> bytes:
        fresh = MerkleTree()
        fresh.extend(data)
        return fresh.root()

    t = timed(replay)
    report("replay: recompute tree from leaf bytes", n / t, "records/s", "MerkleTree.extend + root")
    tree = MerkleTree()
    tree.extend(data)
    root = tree.root()

    rng = random.Random(1)
    picks = [rng.randrange(n) for _ in range(20_000)]
    proofs = [(i, tree.inclusion_proof(i)) for i in picks]
    t = timed(lambda: [tree.inclusion_proof(i) for i in picks])
    report("inclusion proof generation", len(picks) / t, "proofs/s", f"tree of {n}")
    hashes = [hash_leaf(data[i]) for i in picks]

    def verify_all() -> None:
        for (i, p), h in zip(proofs, hashes, strict=True):
            verify_inclusion(h, i, n, p, root)

    t = timed(verify_all)
    report(
        "inclusion proof verification",
        len(proofs) / t,
        "proofs/s",
        f"{len(proofs[0][1])} hashes each",
    )

    signer = Ed25519Signer.generate("safeshare.example/audit/0")
    cp = sign_checkpoint(Checkpoint(signer.name, n, root), [signer])
    reps = 500
    t = timed(lambda: [open_checkpoint(cp, [signer.verifier()]) for _ in range(reps)])
    report("checkpoint open (Ed25519 verify)", reps / t, "checkpoints/s")

    # End to end: a bundle of real leaves with a checkpoint every 1000 leaves.
    clock = FixedClock(1_750_000_000_000)
    log = AuditLog(signer=signer, clock=clock)
    for leaf in leaves:
        log.append(leaf)
        if log.size % 1000 == 0:
            log.checkpoint()
    log.checkpoint()
    bundle = log.export()
    t = timed(lambda: verify_bundle(bundle, [signer.vkey]))
    report(
        "verify_bundle end to end",
        len(bundle.leaves) / t,
        "records/s",
        "strict leaf parse + tree + signatures",
    )


if __name__ == "__main__":
    main()
