"""DPO and auditor reports from a small signed, witnessed log (no Kafka): the
subject-access report's lines and their offline proofs, withheld fields and
break-glass reviews, the PDF, the s.62 CSV and the checkpoint history; a
tampered log gives a report that says so and lists nothing."""

from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path

import pytest

from broker.audit.bundle import Bundle
from broker.audit.cosignature import CosignatureSigner, Witness
from broker.audit.leaf import AuditLeaf, LeafKind, subject_pseudonym
from broker.audit.log import AuditLog
from broker.audit.note import Ed25519Signer
from broker.audit.verify import EventProof, verify_event_proof
from broker.clock import FixedClock
from broker.gateway.consultations import Consulted, consulted_leaves, reader_pseudonym
from broker.workspace import reports

ORIGIN = "safeshare.example/audit/0"
KEY = b"pseudonym-key-for-tests-only-32b!"
CHILD = subject_pseudonym(KEY, "psn-child-a")
OTHER = subject_pseudonym(KEY, "psn-child-b")
T0 = 1_750_000_000_000


def _leaf(t: int, event: str, kind: LeafKind, recipient: str, subject: str, *,
          source: str = "devon-cornwall-police", glass: bool = False) -> AuditLeaf:
    shared = kind is LeafKind.SHARED
    return AuditLeaf(
        time_ms=t, kind=kind, event_id=event,
        event_digest=hashlib.sha256(event.encode()).hexdigest(), source_agency=source,
        recipient=recipient, outcome="ALLOW" if shared else "WITHHOLD",
        rule_id="break-glass-missing-child" if glass else "school-told",
        lawful_basis="UK GDPR Art 6(1)(e), 9(2)(g)" if shared else "",
        data_classes_shared=["pseudonym", "concern_summary"] if shared else [],
        fields_redacted=["payload.MissingEpisode.found.place"] if shared else [],
        policy_digest=hashlib.sha256(b"policy").hexdigest(),
        delivered_digest=hashlib.sha256(event.encode() + recipient.encode()).hexdigest()
        if shared else None,
        subject=subject, reason="" if shared else "NOT_ENTITLED",
        obligations=[f"REVIEW_WITHIN_72H@{t + 72 * 3_600_000}"] if glass else [])


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Bundle, str, str]:
    clock = FixedClock(T0)
    signer = Ed25519Signer.generate(ORIGIN)
    log = AuditLog(signer=signer, clock=clock)
    wsigner = CosignatureSigner.generate("witness.example/w1", clock=clock)
    witness = Witness(signer=wsigner,
                      state_path=tmp_path_factory.mktemp("w") / "witness.json")
    leaves = [
        ("e1", LeafKind.SHARED, "torbay-mash", CHILD, "devon-cornwall-police", True),
        ("e1", LeafKind.SHARED, "example-academy-dsl", CHILD, "devon-cornwall-police", False),
        ("e2", LeafKind.WITHHELD, "example-academy-dsl", CHILD, "torbay-hospital", False),
        ("e3", LeafKind.SHARED, "torbay-mash", OTHER, "devon-cornwall-police", False),
    ]
    last = 0
    for event, kind, rcpt, subj, src, glass in leaves:
        clock.advance(1000)
        log.append(_leaf(clock.now_ms(), event, kind, rcpt, subj, source=src, glass=glass))
        cp = log.checkpoint()
        log.add_cosignature(cp, witness.cosign(cp, log.consistency_proof(last),
                                               log.verifiers()))
        last = log.size
    return log.export(witness_vkeys=(wsigner.vkey,)), signer.vkey, wsigner.vkey


def test_subject_access_lists_each_decision_with_a_proof_that_verifies_offline(
    world: tuple[Bundle, str, str], tmp_path: Path
) -> None:
    bundle, vkey, wvkey = world
    trust = reports.Trust([vkey], [wvkey], 1)
    reviews = {("e1", "torbay-mash"): ["reviewed by sam at 2025-06-15T15:00:00.000Z"]}
    r = reports.subject_access(bundle, "psn-child-a", CHILD, trust, reviews)
    assert r.verified
    assert [(x.event_id, x.kind, x.recipient) for x in r.lines] == [
        ("e1", "SHARED", "torbay-mash"), ("e1", "SHARED", "example-academy-dsl"),
        ("e2", "WITHHELD", "example-academy-dsl")]
    assert r.lines[0].break_glass and r.lines[0].reviews == reviews[("e1", "torbay-mash")]
    assert r.lines[1].withheld == ["payload.MissingEpisode.found.place"]
    for x in r.lines:
        proof = EventProof.from_json_value(x.proof)
        assert verify_event_proof(proof, [vkey]).event_id == x.event_id
    html = reports.subject_access_html(r)
    assert "psn-child-a" in html and "NOT_ENTITLED" in html and "reviewed by sam" in html
    assert "e3" not in html.replace("e3.", "")  # the other child's share is not there
    assert reports.to_pdf(html).startswith(b"%PDF-")


def test_a_tampered_log_gives_no_lines_and_says_why(world: tuple[Bundle, str, str]) -> None:
    bundle, vkey, _ = world
    leaves = list(bundle.leaves)
    leaves[1] = leaves[1].replace(b"example-academy-dsl", b"example-academy-dsX")
    bad = Bundle(bundle.origin, tuple(leaves), bundle.checkpoints, bundle.key_lists,
                 bundle.log_vkeys, bundle.witness_vkeys)
    r = reports.subject_access(bad, "psn-child-a", CHILD, reports.Trust([vkey]))
    assert not r.verified and r.lines == [] and r.verification.startswith("NOT VERIFIED")
    assert "NOT VERIFIED" in reports.subject_access_html(r)
    h = reports.checkpoint_history(bad, reports.Trust([vkey]))
    assert not h.verified and len(h.rows) == 4


def test_checkpoint_history_names_signers_and_witnesses(world: tuple[Bundle, str, str]) -> None:
    bundle, vkey, wvkey = world
    h = reports.checkpoint_history(bundle, reports.Trust([vkey], [wvkey], 1))
    assert h.verified and [c.size for c in h.rows] == [1, 2, 3, 4]
    assert all(c.cosigners == ["witness.example/w1"] for c in h.rows)
    assert all(c.signers == [ORIGIN] for c in h.rows)
    assert "witness.example/w1" in reports.checkpoint_html(h)


def test_s62_csv_has_consultations_and_police_disclosures_only(
    world: tuple[Bundle, str, str]
) -> None:
    bundle, vkey, _ = world
    leaves = [AuditLeaf.from_bytes(b) for b in bundle.leaves]
    leaves += consulted_leaves("user:sam", "torbay-mash", "SAFEGUARDING",
                               [Consulted("e1", "t", 0, 7)], "workspace", T0 + 500)
    consult = [{"kind": "signed_for", "agency": "x", "at_ms": T0}]
    rows = list(csv.DictReader(io.StringIO(reports.s62_csv(
        consult, leaves, {"devon-cornwall-police"}))))
    assert [(r["record"], r["by"], r["party"], r["event_id"]) for r in rows] == [
        ("consultation", "user:sam", "torbay-mash", "e1"),
        ("disclosure", "devon-cornwall-police", "torbay-mash", "e1"),
        ("disclosure", "devon-cornwall-police", "example-academy-dsl", "e1"),
        ("disclosure", "devon-cornwall-police", "torbay-mash", "e3")]
    assert rows[0]["where"] == "t/0/7" and rows[1]["purpose_or_basis"].startswith("UK GDPR")


def test_s62_names_the_people_who_consulted_for_the_dpo(world: tuple[Bundle, str, str]) -> None:
    """The log names a person only by a keyed pseudonym; with the key and the users
    the DPO's report names them (DPA 2018 s.62(2)); a stranger stays pseudonymous."""
    key = b"r" * 32
    leaves = [leaf for who in ("sam", "mallory") for leaf in consulted_leaves(
        reader_pseudonym(key, f"user:{who}"), "torbay-mash", "SAFEGUARDING",
        [Consulted("e1", "t", 0, 7)], "workspace", T0 + 500)]

    def by(names: dict[str, str] | None) -> list[str]:
        return [r["by"] for r in csv.DictReader(io.StringIO(
            reports.s62_csv([], leaves, set(), names)))]
    hidden = by(None)
    assert all(b.startswith("user:") and len(b) == 5 + 64 for b in hidden)
    assert "sam" not in "".join(hidden)
    assert by(reports.reader_names(key, ["sam", "dana"])) == ["user:sam", hidden[1]]
    assert by(reports.reader_names(b"x" * 32, ["sam"])) == hidden  # another key: no names


def test_s62_refusals_come_from_the_signed_log_once(world: tuple[Bundle, str, str]) -> None:
    """A refused impersonation is a REFUSED leaf of the signed log and a record on
    the consultations topic: the report lists it once, from the leaf; a refusal
    older than the leaves (the topic only) is still listed."""
    leaf = AuditLeaf(time_ms=T0 + 9, kind=LeafKind.REFUSED, event_id="",
                     event_digest="ab" * 32, source_agency="example-academy", outcome="FORBIDDEN",
                     reason="publish", refused_by="agency:devon-cornwall-police")
    topic = [{"kind": "refusal", "by": "agency:devon-cornwall-police",
              "claimed": "agency:example-academy", "action": "publish", "at_ms": T0 + 9},
             {"kind": "refusal", "by": "subscriber:torbay-mash",
              "claimed": "subscriber:devon-mash", "action": "read feed", "at_ms": T0 + 1}]
    rows = [r for r in csv.DictReader(io.StringIO(reports.s62_csv(topic, [leaf], set())))
            if r["record"] == "refusal"]
    assert [(r["by"], r["party"], r["purpose_or_basis"]) for r in rows] == [
        ("subscriber:torbay-mash", "subscriber:devon-mash", "read feed"),
        ("agency:devon-cornwall-police", "agency:example-academy", "publish")]
