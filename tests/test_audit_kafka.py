"""The audit log on a real Kafka broker: checkpointer, read_log, witness, the CLI.

Leaves are produced the way the router does it: leaf bytes as
broker.audit.leaf_writer writes them, framed by broker.audit.leaf.audit_encoder,
written inside Kafka transactions. Every test gets a fresh topic namespace.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from broker.audit import note
from broker.audit.bundle import Bundle
from broker.audit.checkpoint import Checkpoint, open_checkpoint, origin_for_shard, sign_checkpoint
from broker.audit.checkpointer import Checkpointer, read_log
from broker.audit.exceptions import BrokenLogError
from broker.audit.keys import read_private_key
from broker.audit.keystore import LogKeyStore
from broker.audit.leaf import AuditLeaf, LeafKind, audit_encoder, encode_batch, subject_pseudonym
from broker.audit.merkle import MerkleTree, verify_consistency
from broker.audit.note import Ed25519Signer
from broker.audit.stream import checkpoint_headers, cosignature_headers
from broker.audit.verify import verify_bundle
from broker.cli.audit import audit
from broker.clock import SystemClock
from broker.kafka.admin import Admin
from broker.kafka.configuration import AUDIT_CONFIG, TopicSpec
from broker.kafka.consumer import make_consumer
from broker.kafka.producer import make_producer
from broker.kafka.structs import Record, TopicPartition
from broker.topics import Topics
from tests.helpers import wait_for

pytestmark = pytest.mark.kafka

ORIGIN = origin_for_shard(0)
PSEUDONYM_KEY = hashlib.sha256(b"test pseudonym key").digest()
POLICY = hashlib.sha256(b"policy v1").hexdigest()
T0 = 1_767_225_600_000


# -- helpers ------------------------------------------------------------------------------


def decisions(n: int, *, start: int = 0) -> list[dict[str, Any]]:
    """Leaf dicts exactly as broker.routing.core emits them, of every kind."""
    out: list[dict[str, Any]] = []
    for i in range(start, start + n):
        event_id = f"00000000-0000-4000-8000-{i // 3:012d}"
        digest = hashlib.sha256(f"event {i // 3}".encode()).hexdigest()
        child = "child-a" if i % 2 else "child-b"
        subject = subject_pseudonym(PSEUDONYM_KEY, child)
        kind = i % 5
        base: dict[str, Any] = {
            "time_ms": T0 + i * 1000,
            "event_id": event_id,
            "event_digest": digest,
            "source_agency": "police-devon",
        }
        if kind in (0, 2):
            base.update(
                recipient="mash-torbay" if kind == 0 else "police-cse",
                outcome="SHARE",
                rule_id="mash-all",
                reason="RISK_OVERRIDES_CONSENT",
                policy_digest=POLICY,
                subject=subject,
                kind="SHARED",
                lawful_basis="UK GDPR Art 9(2)(g); DPA 2018 Sch 1 para 18",
                data_classes_shared=["concern_summary", "location"],
                fields_redacted=["reporter.name"],
                delivered_digest=hashlib.sha256(f"copy {i}".encode()).hexdigest(),
                consent_ref=None,
                obligations=[f"REVIEW_WITHIN_72H@{T0 + i * 1000 + 72 * 3_600_000}"],
            )
        elif kind == 1:
            base.update(
                recipient="school-dsl-12",
                outcome="WITHHOLD",
                rule_id="default-deny",
                reason="NOT_ENTITLED",
                policy_digest=POLICY,
                subject=subject,
                kind="WITHHELD",
            )
        elif kind == 3:  # the bytes did not decode: no event id, no agency
            base.update(kind="QUARANTINED", event_id="", source_agency="", reason="UNDECODABLE")
        else:
            base.update(kind="DUPLICATE", subject=subject, reason="DUPLICATE_EVENT_ID")
        out.append(base)
    return out


def leaf_bytes(dicts: Sequence[dict[str, Any]]) -> list[bytes]:
    return [AuditLeaf(**d).to_bytes() for d in dicts]


class Router:
    """Writes audit batches like the router service: inside a Kafka transaction."""

    def __init__(self, bootstrap: str, topics: Topics, instance: str = "r1") -> None:
        self.topics = topics
        self.producer = make_producer(
            bootstrap, transactional_id=topics.router_transactional_id(instance)
        )
        self.producer.init_transactions()
        self._lso = make_consumer(bootstrap, group_id=None)

    def commit(self, *batches: Sequence[dict[str, Any]]) -> None:
        """One transaction; each argument becomes one or more batch messages.

        Returns once the transaction is visible to read_committed readers:
        commit_transaction returns when the coordinator has logged the commit,
        but the commit markers reach the partition a moment later (until then
        the last stable offset stays before the transaction).
        """
        with self.producer.transaction():
            futures = [
                self.producer.send(self.topics.audit, payload)
                for leaves in batches
                for payload in audit_encoder(leaf_bytes(leaves))
            ]
        self.wait_visible(max(f.get().offset for f in futures))

    def wait_visible(self, offset: int) -> None:
        """Wait until the last stable offset of the audit partition is past ``offset``."""
        tp = TopicPartition(self.topics.audit, 0)
        wait_for(
            "the commit to become visible",
            lambda: self._lso.end_offsets([tp])[tp] > offset,
            timeout_s=30,
            poll_s=0.01,
        )

    def abort(self, leaves: Sequence[dict[str, Any]]) -> None:
        self.producer.begin_transaction()
        for payload in audit_encoder(leaf_bytes(leaves)):
            self.producer.send(self.topics.audit, payload)
        self.producer.flush()
        self.producer.abort_transaction()

    def close(self) -> None:
        self.producer.close()
        self._lso.close()


@pytest.fixture
def audit_topics(admin: Admin, topics: Topics) -> Topics:
    admin.ensure_topics(
        [
            TopicSpec(topics.audit, 1, AUDIT_CONFIG),
            TopicSpec(topics.audit_checkpoints, 1, AUDIT_CONFIG),
        ]
    )
    return topics


@pytest.fixture
def router(kafka_bootstrap: str, audit_topics: Topics) -> Iterator[Router]:
    r = Router(kafka_bootstrap, audit_topics)
    yield r
    r.close()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    keys = tmp_path / "home" / "keys"
    keys.mkdir(parents=True)
    (keys / "subject-pseudonym.key").write_bytes(PSEUDONYM_KEY)
    return tmp_path / "home"


def checkpointer(bootstrap: str, topics: Topics, home: Path, **kw: Any) -> Checkpointer:
    store = LogKeyStore(home / "keys", origin=ORIGIN, shard=0)
    return Checkpointer(bootstrap=bootstrap, topics=topics, keys=store, clock=SystemClock(), **kw)


def anchor(home: Path) -> str:
    return (home / "keys" / "audit-log.vkey").read_text().strip()


def checkpoint_records(bootstrap: str, topics: Topics) -> list[Record]:
    c = make_consumer(bootstrap, group_id=None)
    tp = TopicPartition(topics.audit_checkpoints, 0)
    c.assign([tp])
    c.seek_to_beginning(tp)
    end = c.end_offsets([tp])[tp]
    out: list[Record] = []
    deadline = time.monotonic() + 30
    while c.position(tp) < end and time.monotonic() < deadline:
        out += c.poll_records(timeout_ms=200)
    c.close()
    return out


def of_type(records: list[Record], kind: str) -> list[Record]:
    return [r for r in records if dict(r.headers).get("type") == kind.encode()]


def cli(home: Path, topics: Topics, bootstrap: str, *args: str) -> Result:
    env = {
        "SAFESHARE_HOME": str(home),
        "SAFESHARE_NAMESPACE": topics.namespace,
        "SAFESHARE_BOOTSTRAP": bootstrap,
    }
    return CliRunner().invoke(audit, list(args), env=env, catch_exceptions=False)


# -- the checkpointer ------------------------------------------------------------------------


def test_checkpoints_are_signed_and_match_a_locally_recomputed_tree(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path
) -> None:
    first, second = decisions(7), decisions(12, start=7)
    router.commit(first[:3], first[3:])  # two batch messages in one transaction
    router.commit(second)
    with checkpointer(kafka_bootstrap, audit_topics, home) as cp:
        published = cp.run_once()
        vkey = cp.signer.vkey
    expected = MerkleTree()
    expected.extend(leaf_bytes(first + second))
    got, _ = open_checkpoint(
        published.note,
        [Ed25519Signer.from_skey(read_private_key(home / "keys" / "audit-log.skey")).verifier()],
        origin=ORIGIN,
    )
    assert got.size == 19 and got.root_hash == expected.root()
    assert anchor(home) == vkey
    key_file = home / "keys" / "audit-log.skey"
    assert key_file.stat().st_mode & 0o777 == 0o600

    records = checkpoint_records(kafka_bootstrap, audit_topics)
    [kl] = of_type(records, "key-list")
    [cpr] = of_type(records, "checkpoint")
    assert cpr.key == ORIGIN.encode() and cpr.value == published.note
    headers = dict(cpr.headers)
    assert headers["shard"] == b"0" and headers["origin"] == ORIGIN.encode()
    assert headers["size"] == b"19"
    assert dict(kl.headers)["version"] == b"1"
    # The published key list is signed by the log key and lists it.
    assert (
        vkey
        in note.open(
            kl.value, [Ed25519Signer.from_skey(read_private_key(key_file)).verifier()]
        ).text
    )


def test_aborted_and_open_transactions_never_enter_the_tree(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path
) -> None:
    a, b, c, d = decisions(4), decisions(5, start=4), decisions(3, start=9), decisions(2, start=12)
    router.commit(a)
    router.abort(b)
    router.commit(c)
    other = Router(kafka_bootstrap, audit_topics, instance="r2")
    other.producer.begin_transaction()  # still open while the checkpointer reads
    for payload in audit_encoder(leaf_bytes(d)):
        other.producer.send(audit_topics.audit, payload)
    other.producer.flush()
    try:
        with checkpointer(kafka_bootstrap, audit_topics, home) as cp:
            published = cp.run_once()
    finally:
        other.producer.abort_transaction()
        other.close()
    expected = MerkleTree()
    expected.extend(leaf_bytes(a + c))
    assert published.checkpoint.size == len(a) + len(c)
    assert published.checkpoint.root_hash == expected.root()
    bundle = read_log(kafka_bootstrap, audit_topics)
    assert list(bundle.leaves) == leaf_bytes(a + c)


def test_a_restart_rebuilds_the_same_tree_and_continues(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path
) -> None:
    first = decisions(30)
    router.commit(first)
    with checkpointer(kafka_bootstrap, audit_topics, home) as cp:
        one = cp.run_once()
    with checkpointer(kafka_bootstrap, audit_topics, home) as cp:
        cp.start()  # replays, finds its checkpoint published: nothing new to sign
        assert cp.size == 30 and cp.last_published == one
        assert len(of_type(checkpoint_records(kafka_bootstrap, audit_topics), "checkpoint")) == 1
        more = decisions(11, start=30)
        router.commit(more)
        two = cp.run_once()
    assert two.checkpoint.size == 41
    tree = MerkleTree()
    tree.extend(leaf_bytes(first + more))
    assert two.checkpoint.root_hash == tree.root()
    verify_consistency(
        30, 41, tree.consistency_proof(30), one.checkpoint.root_hash, two.checkpoint.root_hash
    )
    # A restart after leaves arrived unsigned publishes once at start.
    router.commit(decisions(2, start=41))
    with checkpointer(kafka_bootstrap, audit_topics, home) as cp:
        cp.start()
        assert cp.last_published is not None and cp.last_published.checkpoint.size == 43
    assert len(of_type(checkpoint_records(kafka_bootstrap, audit_topics), "checkpoint")) == 3


def test_following_publishes_a_checkpoint_within_the_interval(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path
) -> None:
    cp = checkpointer(kafka_bootstrap, audit_topics, home, interval_s=0.5)
    cp.start()
    stop = threading.Event()
    thread = threading.Thread(target=lambda: cp.run(stop_event=stop), daemon=True)
    thread.start()
    try:
        for k in range(3):
            router.commit(decisions(4, start=4 * k))
            committed = time.monotonic()
            wait_for(
                f"a checkpoint of {4 * (k + 1)} leaves",
                lambda: cp.last_published is not None
                and cp.last_published.checkpoint.size >= 4 * (k + 1),  # noqa: B023
                timeout_s=10,
                poll_s=0.02,
            )
            assert cp.last_published is not None
            assert cp.last_published.checkpoint.size == 4 * (k + 1)
            assert time.monotonic() - committed < 3.0
    finally:
        stop.set()
        thread.join(10)
        cp.close()
    assert not thread.is_alive()
    tree = MerkleTree()
    tree.extend(leaf_bytes(decisions(12)))
    assert cp.last_published.checkpoint.root_hash == tree.root()


def test_a_record_that_is_not_a_batch_is_a_loud_error_naming_its_offset(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path
) -> None:
    router.commit(decisions(3))
    with checkpointer(kafka_bootstrap, audit_topics, home) as cp:
        assert cp.run_once().checkpoint.size == 3
    with router.producer.transaction():
        md = router.producer.send(audit_topics.audit, b"not an audit batch").get()
    router.commit(decisions(3, start=3))
    with (
        checkpointer(kafka_bootstrap, audit_topics, home) as cp,
        pytest.raises(
            BrokenLogError,
            match=rf"audit log broken at {audit_topics.audit}\[0\]@{md.offset}: .*"
            "not an audit batch.*leaf 3 onwards",
        ),
    ):
        cp.run_once()
    # Nothing was signed past the break.
    cps = of_type(checkpoint_records(kafka_bootstrap, audit_topics), "checkpoint")
    assert [dict(r.headers)["size"] for r in cps] == [b"3"]


def test_a_leaf_that_is_not_canonical_is_a_loud_error(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path
) -> None:
    good = leaf_bytes(decisions(2))
    bad = good[1].replace(b'"v":1}', b'"v":1 }')
    with router.producer.transaction():
        md = router.producer.send(audit_topics.audit, encode_batch([good[0], bad])).get()
    router.wait_visible(md.offset)
    with (
        checkpointer(kafka_bootstrap, audit_topics, home) as cp,
        pytest.raises(
            BrokenLogError,
            match=rf"@{md.offset}: leaf 1 \(number 1 in the batch\) is not a valid audit leaf",
        ),
    ):
        cp.run_once()


def test_a_published_checkpoint_the_partition_does_not_hold_stops_the_checkpointer(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path
) -> None:
    router.commit(decisions(5))
    with checkpointer(kafka_bootstrap, audit_topics, home) as cp:
        cp.run_once()
        signer = cp.signer
    fork = MerkleTree()
    fork.extend([*leaf_bytes(decisions(5)), b"a leaf that is not in Kafka"])
    publish_checkpoint(kafka_bootstrap, audit_topics, signer, fork, 6)
    with (
        checkpointer(kafka_bootstrap, audit_topics, home) as cp,
        pytest.raises(BrokenLogError, match="holds only 5 committed leaves"),
    ):
        cp.start()


def publish_checkpoint(
    bootstrap: str, topics: Topics, signer: Ed25519Signer, tree: MerkleTree, size: int
) -> bytes:
    """Sign a tree with the log's key and publish it as the checkpointer would (a fork)."""
    signed = sign_checkpoint(Checkpoint(ORIGIN, size, tree.root(size)), [signer])
    with make_producer(bootstrap) as p:
        p.send(
            topics.audit_checkpoints,
            signed,
            key=ORIGIN.encode(),
            headers=checkpoint_headers(ORIGIN, 0, size),
            partition=0,
        ).get()
    return signed


# -- verify, export, prove, who-saw through the CLI -------------------------------------------


def test_audit_verify_passes_from_kafka_and_fails_on_a_tampered_bundle(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path, tmp_path: Path
) -> None:
    router.commit(decisions(10))
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0
    router.commit(decisions(15, start=10))
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0
    router.commit(decisions(3, start=25))  # not checkpointed yet: not exported

    ok = cli(home, audit_topics, kafka_bootstrap, "verify")
    assert ok.exit_code == 0, ok.output
    assert ok.output.startswith(
        f"OK {ORIGIN}: 25 leaves (10 shared, 5 withheld, 5 quarantined, "
        "5 duplicate, 0 key_rotation) verified against 2 signed checkpoints"
    )

    out = tmp_path / "bundle.json"
    exported = cli(home, audit_topics, kafka_bootstrap, "export", "--out", str(out))
    assert exported.exit_code == 0 and "25 leaves, 2 checkpoints" in exported.output
    assert cli(home, audit_topics, kafka_bootstrap, "verify", "--bundle", str(out)).exit_code == 0

    bundle = Bundle.read(out)
    leaves = list(bundle.leaves)
    leaves[12], leaves[13] = leaves[13], leaves[12]
    Bundle.create(
        origin=bundle.origin,
        leaves=leaves,
        checkpoints=bundle.checkpoints,
        key_lists=bundle.key_lists,
    ).write(out)
    bad = cli(home, audit_topics, kafka_bootstrap, "verify", "--bundle", str(out))
    assert bad.exit_code == 1
    assert "checkpoint 1 (size 25) does not match the leaves" in bad.output
    assert "leaves 12 and 13 are out of order" in bad.output

    Bundle.create(
        origin=bundle.origin,
        leaves=[*bundle.leaves[:20], *bundle.leaves[21:]],
        checkpoints=bundle.checkpoints,
        key_lists=bundle.key_lists,
    ).write(out)
    bad = cli(home, audit_topics, kafka_bootstrap, "verify", "--bundle", str(out))
    assert bad.exit_code == 1 and "covers more leaves than the bundle holds (24)" in bad.output
    assert "at an index in 10..24" in bad.output

    stranger = Ed25519Signer.generate(ORIGIN)
    untrusted = cli(home, audit_topics, kafka_bootstrap, "verify", "--vkey", stranger.vkey)
    assert untrusted.exit_code == 1 and "key list 0 does not verify" in untrusted.output


def test_who_saw_returns_exactly_the_decisions_about_that_subject(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path
) -> None:
    all_ = decisions(20)
    router.commit(all_)
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0
    mine = subject_pseudonym(PSEUDONYM_KEY, "child-a")
    expected = [
        (i, d)
        for i, d in enumerate(all_)
        if d["kind"] in ("SHARED", "WITHHELD") and d.get("subject") == mine
    ]
    res = cli(home, audit_topics, kafka_bootstrap, "who-saw", "--subject", "child-a", "--json")
    assert res.exit_code == 0, res.output
    got = [json.loads(line) for line in res.output.splitlines()]
    assert [(g["kind"], g["recipient"], g["event_id"]) for g in got] == [
        (d["kind"], d["recipient"], d["event_id"]) for _, d in expected
    ]
    assert [g["proof"]["index"] for g in got] == [i for i, _ in expected]
    assert {g["lawful_basis"] for g in got if g["kind"] == "SHARED"} == {
        "UK GDPR Art 9(2)(g); DPA 2018 Sch 1 para 18"
    }
    text = cli(home, audit_topics, kafka_bootstrap, "who-saw", "--subject", "child-a")
    assert text.exit_code == 0 and text.output.splitlines()[0].startswith(
        f"{len(expected)} decision(s) about subject {mine[:16]}"
    )
    assert "child-a" not in text.output  # the identifier itself is never printed
    assert f"[proof: leaf {expected[0][0]} in checkpoint 20]" in text.output
    # A time window: [from, to).
    window = cli(
        home,
        audit_topics,
        kafka_bootstrap,
        "who-saw",
        "--subject",
        "child-a",
        "--json",
        "--from",
        str(expected[1][1]["time_ms"]),
        "--to",
        str(expected[2][1]["time_ms"]),
    )
    assert [json.loads(x)["proof"]["index"] for x in window.output.splitlines()] == [expected[1][0]]
    nobody = cli(home, audit_topics, kafka_bootstrap, "who-saw", "--subject", "child-z", "--json")
    assert nobody.exit_code == 0 and nobody.output == ""


def test_prove_and_verify_proof_round_trip(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path, tmp_path: Path
) -> None:
    all_ = decisions(12)
    router.commit(all_)
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0
    event = all_[4]["event_id"]
    out = tmp_path / "proof.json"
    res = cli(home, audit_topics, kafka_bootstrap, "prove", "--event", event, "--out", str(out))
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert [p["index"] for p in doc["proofs"]] == [
        i for i, d in enumerate(all_) if d["event_id"] == event
    ]
    # Offline: no Kafka, only the trusted key.
    ok = CliRunner().invoke(audit, ["verify-proof", str(out), "--vkey", anchor(home)])
    assert ok.exit_code == 0, ok.output
    assert ok.output.count("OK leaf ") == len(doc["proofs"])
    doc["proofs"][0]["leaf"] = doc["proofs"][1]["leaf"]
    out.write_text(json.dumps(doc))
    bad = CliRunner().invoke(audit, ["verify-proof", str(out), "--vkey", anchor(home)])
    assert bad.exit_code == 1 and "does not verify: expected root" in bad.output
    none = cli(home, audit_topics, kafka_bootstrap, "prove", "--event", "no-such-event")
    assert none.exit_code == 1


# -- witness ---------------------------------------------------------------------------------


def test_witness_cosigns_a_consistent_log_and_refuses_a_fork(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path, tmp_path: Path
) -> None:
    state = tmp_path / "witness" / "state.json"
    wargs = ["witness", "--name", "witness.example/w1", "--state", str(state)]
    router.commit(decisions(6))
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0
    first = cli(home, audit_topics, kafka_bootstrap, *wargs)
    assert first.exit_code == 0, first.output
    assert "cosigned 1 checkpoint(s), latest size 6" in first.output
    router.commit(decisions(4, start=6))
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0
    router.commit(decisions(4, start=10))
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0
    second = cli(home, audit_topics, kafka_bootstrap, *wargs)
    assert second.exit_code == 0, second.output
    assert "cosigned 2 checkpoint(s), latest size 14 root " in second.output
    assert "; 1 seen before; 0 refused" in second.output

    wvkey = json.loads(state.read_text())  # the state is the witness's; its key is beside it
    assert wvkey["logs"][ORIGIN]["size"] == 14
    from broker.audit.cosignature import CosignatureSigner

    wsigner = CosignatureSigner.from_skey(
        read_private_key(state.with_suffix(".skey")), clock=SystemClock()
    )
    # Someone with write access publishes a bogus cosignature under the witness's name:
    # read_log drops it (it does not verify), so it cannot deny auditors their answer.
    cps = of_type(checkpoint_records(kafka_bootstrap, audit_topics), "checkpoint")
    forged_raw = wsigner.key_id.to_bytes(4, "big") + bytes(72)
    forged_sig = note.Signature(wsigner.name, wsigner.key_id, note.b64encode(forged_raw))
    with make_producer(kafka_bootstrap) as p:
        p.send(
            audit_topics.audit_checkpoints,
            cps[-1].value + forged_sig.line().encode(),
            key=ORIGIN.encode(),
            headers=cosignature_headers(ORIGIN, 0, 14, wsigner.name, wsigner.vkey),
            partition=0,
        ).get()
    ok = cli(
        home,
        audit_topics,
        kafka_bootstrap,
        "verify",
        "--witness-vkey",
        wsigner.vkey,
        "--quorum",
        "1",
    )
    assert ok.exit_code == 0, ok.output
    assert "3 signed checkpoints and 3 cosignatures" in ok.output
    assert "witnesses witness.example/w1" in ok.output

    # The operator signs a different tree of the same size with the same key.
    log_key = Ed25519Signer.from_skey(read_private_key(home / "keys" / "audit-log.skey"))
    fork = MerkleTree()
    fork.extend([*leaf_bytes(decisions(13)), b"another leaf 13"])
    publish_checkpoint(kafka_bootstrap, audit_topics, log_key, fork, 14)
    real = MerkleTree()
    real.extend(leaf_bytes(decisions(14)))
    refused = cli(home, audit_topics, kafka_bootstrap, *wargs)
    assert refused.exit_code == 3
    assert "SPLIT VIEW" in refused.output
    assert fork.root().hex() in refused.output and real.root().hex() in refused.output
    assert json.loads(state.read_text())["logs"][ORIGIN]["size"] == 14  # nothing new cosigned
    # The fork is in the log's own record now: verification fails too.
    assert cli(home, audit_topics, kafka_bootstrap, "verify").exit_code == 1


def test_witness_refuses_a_larger_fork(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path, tmp_path: Path
) -> None:
    state = tmp_path / "w.json"
    router.commit(decisions(5))
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0
    assert (
        cli(
            home,
            audit_topics,
            kafka_bootstrap,
            "witness",
            "--name",
            "w.example/x",
            "--state",
            str(state),
        ).exit_code
        == 0
    )
    # A checkpoint extending a rewritten history: leaf 2 changed, then two more.
    rewritten = decisions(7)
    rewritten[2] = {**rewritten[2], "recipient": "someone-else"}
    router.commit(decisions(2, start=5))
    fork = MerkleTree()
    fork.extend(leaf_bytes(rewritten))
    log_key = Ed25519Signer.from_skey(read_private_key(home / "keys" / "audit-log.skey"))
    publish_checkpoint(kafka_bootstrap, audit_topics, log_key, fork, 7)
    res = cli(
        home,
        audit_topics,
        kafka_bootstrap,
        "witness",
        "--name",
        "w.example/x",
        "--state",
        str(state),
    )
    assert res.exit_code == 3 and f"signs root {fork.root().hex()} for size 7" in res.output


# -- keys ------------------------------------------------------------------------------------


def test_key_rotation_through_kafka_keeps_the_log_verifiable(
    kafka_bootstrap: str, router: Router, audit_topics: Topics, home: Path, tmp_path: Path
) -> None:
    router.commit(decisions(4))
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0
    first = anchor(home)
    state = tmp_path / "w.json"
    witness = ["witness", "--name", "w.example/x", "--state", str(state)]
    assert cli(home, audit_topics, kafka_bootstrap, *witness).exit_code == 0

    rotated = cli(home, audit_topics, kafka_bootstrap, "keys", "--rotate", "--overlap", "1h")
    assert rotated.exit_code == 0, rotated.output
    assert "key list v2" in rotated.output
    router.commit(decisions(3, start=4))
    assert cli(home, audit_topics, kafka_bootstrap, "checkpoint").exit_code == 0

    shown = cli(home, audit_topics, kafka_bootstrap, "keys")
    assert f"trust anchor (first key): {first}" in shown.output and "retired:" in shown.output
    res = cli(home, audit_topics, kafka_bootstrap, "verify", "--vkey", first)
    assert res.exit_code == 0, res.output
    assert "8 leaves (" in res.output and "1 key_rotation" in res.output
    assert "key list v2" in res.output
    # The witness follows the key list from Kafka and cosigns checkpoints by the new key.
    again = cli(home, audit_topics, kafka_bootstrap, *witness)
    assert again.exit_code == 0 and "latest size 8" in again.output
    bundle = read_log(kafka_bootstrap, audit_topics)
    report = verify_bundle(bundle, [first])
    assert [leaf.kind for leaf in report.leaves].count(LeafKind.KEY_ROTATION) == 1
    assert report.key_list_version == 2 and len(report.signing_keys) == 2
