"""Audit log figures on this machine. Prints figures; never passes or fails.

    .venv/bin/python bench/bench_audit.py [--leaves N] [--no-kafka] [--seconds S] ...
    .venv/bin/python -m bench audit

In memory (rates per core: CPU time of this process, best of three runs):
leaf encoding and parsing, tree appends and replay, proofs, signatures,
verify_bundle.

On a real broker (``broker.kafka.cluster.obtain_cluster``: $SAFESHARE_BOOTSTRAP,
else testcontainers, else the project's local Kafka), in a fresh namespace
deleted afterwards:

- decision to first signed checkpoint: a router-like producer commits
  transactions of audit leaves at a steady rate while a Checkpointer runs
  (``interval_s`` 1 s, the default); a reader of the checkpoints topic notes
  when each checkpoint appears. A leaf's latency is from its transaction's
  commit to the first checkpoint whose size covers it, as a witness or an
  auditor reading the topic would see it (p50, p99, max);
- replay: how fast the audit partition is read back into a tree from Kafka
  (what a checkpointer restart and ``read_log`` do), wall clock.

Each figure is printed for people and once more as a machine-readable line::

    BENCH {"name": "...", "value": ..., "unit": "..."}
"""

from __future__ import annotations

import argparse
import bisect
import hashlib
import json
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from broker.audit.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint  # noqa: E402
from broker.audit.leaf import AuditLeaf, LeafKind, subject_pseudonym  # noqa: E402
from broker.audit.leaf_template import LeafEvent, LeafTemplate, leaf_bytes  # noqa: E402
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


def main(argv: Sequence[str] | None = None) -> None:
    """Every figure. ``argv`` defaults to none (``python -m bench`` calls ``main()``)."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--leaves", type=int, default=200_000, help="in-memory tree size")
    ap.add_argument("--no-kafka", action="store_true", help="skip the figures on a real broker")
    ap.add_argument("--seconds", type=float, default=10.0, help="latency run length")
    ap.add_argument("--rate", type=float, default=20.0, help="router transactions per second")
    ap.add_argument("--per-txn", type=int, default=10, help="audit leaves per transaction")
    ap.add_argument("--replay-leaves", type=int, default=100_000, help="leaves replayed from Kafka")
    args = ap.parse_args(list(argv or []))
    in_memory(args.leaves)
    if not args.no_kafka:
        on_kafka(
            seconds=args.seconds,
            rate=args.rate,
            per_txn=args.per_txn,
            replay_leaves=args.replay_leaves,
        )


def in_memory(n: int) -> None:

    leaves = make_leaves(min(n, 20_000))
    t = timed(lambda: [leaf.to_bytes() for leaf in leaves])
    report("leaf canonical serialisation", len(leaves) / t, "leaves/s")
    router_leaf_bytes()
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


def router_leaf_bytes(n: int = 20_000) -> None:
    """The router's per-decision cost of a leaf: the dataclass path, leaf_bytes of a
    dict, and the routing core's path (a decision's LeafTemplate filled per leaf).

    Two shares and one withholding per event, as the router's dicts are (see
    router_leaves). Both paths run in this process, alternately, so the ratio
    holds whatever else the machine is doing.
    """
    dicts: list[dict[str, Any]] = []
    for i, d in enumerate(router_leaves(n)):
        dicts.append(d)
        if i % 2:
            kept = {k: v for k, v in d.items() if k not in _SHARE_ONLY}
            dicts.append(kept | {"kind": "WITHHELD", "outcome": "WITHHOLD"})
    expected = [AuditLeaf(**d).to_bytes() for d in dicts]
    assert [leaf_bytes(d) for d in dicts] == expected
    # The routing core's path: one LeafTemplate per decision (made once, outside
    # the timing, as the core keeps them), one LeafEvent per event, a fill per leaf.
    templates: dict[tuple[str, ...], LeafTemplate | None] = {}
    work: list[tuple[LeafTemplate, dict[str, Any], dict[str, Any]]] = []
    for d in dicts:
        decision = {k: v for k, v in d.items() if k in _DECISION_PART}
        key = tuple(str(decision.get(k)) for k in sorted(_DECISION_PART))
        template = templates.setdefault(key, LeafTemplate.checked(**decision))
        assert template is not None
        event = {k: v for k, v in d.items() if k in _EVENT_PART}
        work.append((template, event, {k: v for k, v in d.items() if k in _LEAF_PART}))

    def by_templates() -> list[bytes]:
        out: list[bytes] = []
        event_id, event = None, None
        for template, event_fields, own in work:
            if event_fields["event_id"] != event_id:  # the next event: its part, once
                event_id, event = event_fields["event_id"], LeafEvent.checked(**event_fields)
            assert event is not None
            leaf = template.fill(event, **own)
            assert leaf is not None
            out.append(leaf.data)
        return out

    assert by_templates() == expected
    old = new = filled = float("inf")
    for _ in range(3):  # alternately, so that all see the same machine
        old = min(old, timed(lambda: [AuditLeaf(**d).to_bytes() for d in dicts]))
        new = min(new, timed(lambda: [leaf_bytes(d) for d in dicts]))
        filled = min(filled, timed(by_templates))
    report("router leaf: AuditLeaf(**fields).to_bytes()", old / len(dicts) * 1e9, "ns/leaf")
    report(
        "router leaf: leaf_bytes(fields)",
        new / len(dicts) * 1e9,
        "ns/leaf",
        f"{old / new:.1f}x faster, same bytes",
    )
    report(
        "router leaf: LeafTemplate.fill",
        filled / len(dicts) * 1e9,
        "ns/leaf",
        f"{new / filled:.1f}x faster than leaf_bytes, same bytes",
    )


# Which of a leaf's fields a decision's template holds, an event's part, a leaf itself.
_DECISION_PART = frozenset(
    ("kind", "recipient", "outcome", "rule_id", "reason", "policy_digest", "lawful_basis")
    + ("data_classes_shared", "fields_redacted")
)
_EVENT_PART = frozenset(("event_id", "event_digest", "source_agency", "subject"))
_LEAF_PART = frozenset(("time_ms", "delivered_digest", "consent_ref", "obligations"))


_SHARE_ONLY = (
    "lawful_basis",
    "data_classes_shared",
    "fields_redacted",
    "delivered_digest",
    "consent_ref",
    "obligations",
)


# -- on a real broker -------------------------------------------------------------------


def router_leaves(n: int, start: int = 0) -> list[dict[str, Any]]:
    """Leaf dicts as broker.routing.core emits them for a share."""
    key = b"bench-pseudonym-key-32-bytes-long"
    policy = hashlib.sha256(b"policy").hexdigest()
    now = int(time.time() * 1000)
    return [
        {
            "time_ms": now,
            "event_id": f"5f0c1e8e-9a49-4d1c-8d57-{i:012d}",
            "event_digest": hashlib.sha256(i.to_bytes(8, "big")).hexdigest(),
            "source_agency": "police-devon",
            "recipient": "mash-torbay",
            "outcome": "SHARE",
            "rule_id": "mash-all",
            "reason": "RISK_OVERRIDES_CONSENT",
            "policy_digest": policy,
            "subject": subject_pseudonym(key, f"child-{i % 997}"),
            "kind": "SHARED",
            "lawful_basis": "UK GDPR Art 9(2)(g); DPA 2018 Sch 1 para 18",
            "data_classes_shared": ["concern_summary", "location"],
            "fields_redacted": ["reporter.contact", "reporter.name"],
            "delivered_digest": hashlib.sha256(b"copy" + i.to_bytes(8, "big")).hexdigest(),
            "consent_ref": None,
            "obligations": [f"REVIEW_WITHIN_72H@{now + 72 * 3_600_000}"],
        }
        for i in range(start, start + n)
    ]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of already sorted values."""
    k = max(0, min(len(sorted_values) - 1, int(round(q / 100 * len(sorted_values) + 0.5)) - 1))
    return sorted_values[k]


def on_kafka(*, seconds: float, rate: float, per_txn: int, replay_leaves: int) -> None:
    from broker import config
    from broker.audit.checkpoint import origin_for_shard
    from broker.audit.checkpointer import Checkpointer
    from broker.audit.keystore import LogKeyStore
    from broker.audit.leaf import audit_encoder
    from broker.audit.stream import CheckpointsTopic, LeafReader, RecordType
    from broker.clock import SystemClock
    from broker.kafka.admin import Admin
    from broker.kafka.cluster import obtain_cluster
    from broker.kafka.configuration import AUDIT_CONFIG, TopicSpec
    from broker.kafka.producer import make_producer
    from broker.topics import Topics

    with obtain_cluster(config.load()) as cluster:
        bootstrap = cluster.bootstrap
        print(f"Kafka: {cluster.description}")
        topics = Topics(f"bench-audit-{uuid.uuid4().hex[:8]}")
        names = [topics.audit, topics.audit_checkpoints]
        with Admin(bootstrap) as admin:
            admin.ensure_topics([TopicSpec(n, 1, AUDIT_CONFIG) for n in names])
        keys = tempfile.TemporaryDirectory(prefix="bench-audit-keys-")
        origin = origin_for_shard(0)
        producer = make_producer(
            bootstrap, transactional_id=topics.router_transactional_id("bench")
        )
        producer.init_transactions()
        try:
            # -- decision to first signed checkpoint --------------------------------
            cp = Checkpointer(
                bootstrap=bootstrap,
                topics=topics,
                keys=LogKeyStore(keys.name, origin=origin, shard=0),
                clock=SystemClock(),
            )
            cp.start()
            stop = threading.Event()
            seen: list[tuple[int, float]] = []  # (checkpoint size, when it was read)
            watcher = CheckpointsTopic(bootstrap, topics)

            def watch() -> None:
                while not stop.is_set():
                    for e in watcher.poll(timeout_ms=50):
                        if e.type is RecordType.CHECKPOINT:
                            seen.append((int(e.headers["size"]), time.monotonic()))

            threads = [
                threading.Thread(target=lambda: cp.run(stop_event=stop), daemon=True),
                threading.Thread(target=watch, daemon=True),
            ]
            for t in threads:
                t.start()
            txns = int(seconds * rate)
            commits: list[tuple[int, int, float]] = []  # (first index, end index, commit time)
            txn_ms: list[float] = []
            index = 0
            started = time.monotonic()
            for k in range(txns):
                due = started + k / rate
                time.sleep(max(0.0, due - time.monotonic()))
                payloads = audit_encoder([leaf_bytes(d) for d in router_leaves(per_txn, index)])
                t0 = time.monotonic()
                with producer.transaction():
                    for payload in payloads:
                        producer.send(topics.audit, payload)
                done = time.monotonic()
                txn_ms.append((done - t0) * 1000)
                commits.append((index, index + per_txn, done))
                index += per_txn
            deadline = time.monotonic() + 30
            while (not seen or seen[-1][0] < index) and time.monotonic() < deadline:
                time.sleep(0.05)
            stop.set()
            for t in threads:
                t.join(10)
            watcher.close()
            cp.close()
            sizes = [s for s, _ in seen]
            latencies: list[float] = []
            for first, end, committed in commits:
                for i in range(first, end):
                    j = bisect.bisect_right(sizes, i)  # first checkpoint with size > i
                    if j < len(seen):
                        latencies.append((seen[j][1] - committed) * 1000)
            latencies.sort()
            print(
                f"{txns} transactions of {per_txn} leaves at {rate:g}/s; "
                f"{len(seen)} checkpoints; {len(latencies)}/{index} leaves covered"
            )
            report("router transaction commit, p50", statistics.median(txn_ms), "ms")
            report("decision to first signed checkpoint, p50", percentile(latencies, 50), "ms")
            report("decision to first signed checkpoint, p99", percentile(latencies, 99), "ms")
            report("decision to first signed checkpoint, max", latencies[-1], "ms")

            # -- replay from Kafka ----------------------------------------------------
            batch = audit_encoder([leaf_bytes(d) for d in router_leaves(5000, index)])
            chunk = 5000
            for _ in range(max(1, replay_leaves // chunk)):
                with producer.transaction():
                    for payload in batch:
                        producer.send(topics.audit, payload)
            reader = LeafReader(bootstrap, topics, validate_from=2**63)
            t0, c0 = time.perf_counter(), time.process_time()
            reader.catch_up()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            size = sum(map(len, batch)) / chunk
            report(
                "replay from Kafka into a tree (wall)",
                reader.size / wall,
                "leaves/s",
                f"{reader.size} leaves of ~{size:.0f} bytes; {reader.size / cpu:,.0f}/s per CPU s",
            )
            reader.close()
            for label in ("new leaves parsed strictly", "all leaves signed before"):
                restart = Checkpointer(
                    bootstrap=bootstrap,
                    topics=topics,
                    keys=LogKeyStore(keys.name, origin=origin, shard=0),
                    clock=SystemClock(),
                )
                t0 = time.perf_counter()
                restart.start()  # read checkpoints, replay, check the root, publish if grown
                took = time.perf_counter() - t0
                report(
                    f"checkpointer restart ({label})",
                    restart.size / took,
                    "leaves/s",
                    f"{restart.size} leaves in {took * 1000:,.0f} ms",
                )
                restart.close()
        finally:
            producer.close()
            keys.cleanup()
            with Admin(bootstrap) as admin:
                admin.delete_topics(names)


if __name__ == "__main__":
    main(sys.argv[1:])
