"""Consent records in the routing core, without Kafka: only the entitled may speak for a child.

A consent record is applied only if it arrives on its recording agency's own
consent topic, names that agency, is signed where required, and the policy's
``consent`` section entitles the agency for the purpose (and, to replace
another agency's record still in force, lets it withdraw others'). Everything
else is quarantined with a reason and changes no decision. Every record
applied, and every expiry a decision meets, is a CONSENT audit leaf; the
consent state rebuilt from those leaves alone is the state routing used.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from broker.audit.leaf import AuditLeaf
from broker.clock import FixedClock
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, Routed, RoutingCore
from broker.signing import AgencySigner, sign_message
from broker.topics import Topics
from tests.helpers import CODEC, example

T = Topics("unit")
NOW = 1_795_000_000_000
DAY = 24 * 3600 * 1000
POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"
CHILD = "psn-7Q2K-93XD"  # the education concern's child, of Torbay (E06000027)
SCHOOL, RHI, CSC = "example-academy", "safe-return-charity", "torbay-childrens-services"
TYPES = {SCHOOL: "SCHOOL", RHI: "VOLUNTARY", CSC: "CHILDRENS_SOCIAL_CARE"}


def _core(policy_text: str | None = None) -> RoutingCore:
    text = policy_text if policy_text is not None else POLICY.read_text()
    return RoutingCore(
        codec=CODEC, decider=Policy.from_text(text, field_classes=CODEC.data_classes()),
        consents=ConsentStore(), topics=T, clock=FixedClock(NOW), pseudonym_key=b"k" * 32,
    )  # fmt: skip


@pytest.fixture
def core() -> RoutingCore:
    return _core()


def consent(
    agency: str,
    status: str = "GIVEN",
    *,
    purpose: str = "SAFEGUARDING",
    area: str = "E06000027",
    expires_at: int | None = None,
    signer: AgencySigner | None = None,
) -> bytes:
    """A consent record of ``agency`` for the education concern's child, as wire bytes."""
    event = example("consent_record")
    event["source"] = {"agency_id": agency, "agency_type": TYPES[agency], "system": "x"}
    event["subject"] = {"pseudonym": CHILD, "local_authority": area}
    event["payload"].update(
        status=status, purpose=purpose, scope_roles=[], scope_data_classes=[],
        expires_at=expires_at,
    )  # fmt: skip
    unsigned = CODEC.encode({**CODEC.from_json(event), "signature": None})
    return unsigned if signer is None else sign_message(unsigned, signer)


def on(topic: str, value: bytes | None, key: bytes | None = None) -> Inbound:
    return Inbound(topic, 0, 1, key, value)


def concern() -> Inbound:
    """An education concern that needs consent to reach the MASH (no reason to share
    without it)."""
    event = example("education_concern")
    event["sharing"] = {"no_consent_reason": None, "justification": None, "break_glass": False}
    return on(T.ingest(SCHOOL), CODEC.encode(CODEC.from_json(event)))


def decisions(core: RoutingCore) -> dict[str, str]:
    routed = core.handle(concern())
    fields = [json.loads(lf) for lf in routed.leaves]
    return {lf["recipient"]: lf["kind"] for lf in fields if lf["kind"] != "CONSENT"}


def kinds(routed: Routed) -> list[str]:
    return [json.loads(lf)["kind"] for lf in routed.leaves]


# -- the school forges consent ------------------------------------------------------------------
def test_a_school_recording_consent_it_is_not_entitled_to_changes_no_decision(
    core: RoutingCore,
) -> None:
    before = decisions(core)
    assert before["torbay-mash"] == "WITHHELD"  # no consent, no reason to share without it
    given = core.handle(on(T.consent(SCHOOL), consent(SCHOOL, "GIVEN")))
    assert given.quarantined == "NOT_ENTITLED" and kinds(given) == ["QUARANTINED"]
    assert decisions(core) == before
    withdrawn = core.handle(on(T.consent(SCHOOL), consent(SCHOOL, "WITHDRAWN")))
    assert withdrawn.quarantined == "NOT_ENTITLED"
    assert decisions(core) == before and len(core.consents) == 0


@pytest.mark.parametrize("signed", [False, True])
def test_a_record_naming_another_agency_than_its_topics_owner_is_quarantined(
    signed: bool,
) -> None:
    """The school writes a record in the return-home service's name on its own topic
    (the only consent topic Kafka lets it write): AGENCY_MISMATCH, signed or not."""
    rhi = AgencySigner.generate(RHI)
    text = POLICY.read_text()
    if signed:  # the service's real key registered, and signatures required
        entry = rhi.registry_entry()
        text = text.replace("event_signatures: optional", "event_signatures: required").replace(
            f"  - id: {RHI}\n", f"  - id: {RHI}\n    keys: [{{id: '{entry['id']}',"
            f" public_key: '{entry['public_key']}'}}]\n", 1,
        ).replace("    type: VOLUNTARY\n    local_authorities: [E06000027]\n    keys: []\n",
                  "    type: VOLUNTARY\n    local_authorities: [E06000027]\n", 1)
    core = _core(text)
    routed = core.handle(on(T.consent(SCHOOL), consent(RHI, signer=rhi if signed else None)))
    assert routed.quarantined == "AGENCY_MISMATCH" and len(core.consents) == 0
    # The same record on the service's own topic is applied.
    ok = core.handle(on(T.consent(RHI), consent(RHI, signer=rhi if signed else None)))
    assert ok.quarantined is None and kinds(ok) == ["CONSENT"]


def test_a_tombstone_is_quarantined_and_ends_no_consent(core: RoutingCore) -> None:
    assert kinds(core.handle(on(T.consent(RHI), consent(RHI)))) == ["CONSENT"]
    shared = decisions(core)
    assert shared["torbay-mash"] == "SHARED"
    for agency in (RHI, SCHOOL):
        routed = core.handle(on(T.consent(agency), None, key=f"{CHILD}\x1fSAFEGUARDING".encode()))
        assert routed.quarantined == "NOT_ENTITLED" and kinds(routed) == ["QUARANTINED"]
    assert decisions(core) == shared


def test_consent_only_for_children_of_the_recorders_own_area(core: RoutingCore) -> None:
    routed = core.handle(on(T.consent(RHI), consent(RHI, area="E10000008")))
    assert routed.quarantined == "NOT_ENTITLED"


def test_a_forged_signature_is_quarantined_before_anything_else() -> None:
    rhi = AgencySigner.generate(RHI)
    entry = rhi.registry_entry()
    text = POLICY.read_text().replace(
        "    type: VOLUNTARY\n    local_authorities: [E06000027]\n    keys: []\n",
        f"    type: VOLUNTARY\n    local_authorities: [E06000027]\n    keys: [{{id:"
        f" '{entry['id']}', public_key: '{entry['public_key']}'}}]\n", 1,
    )  # fmt: skip
    core = _core(text)
    forged = consent(RHI, signer=AgencySigner.generate(RHI))
    assert core.handle(on(T.consent(RHI), forged)).quarantined == "BAD_SIGNATURE"
    unsigned = consent(RHI)  # the service has a key, so it must sign even when optional
    assert core.handle(on(T.consent(RHI), unsigned)).quarantined == "BAD_SIGNATURE"
    assert len(core.consents) == 0
    assert core.handle(on(T.consent(RHI), consent(RHI, signer=rhi))).quarantined is None


# -- who may withdraw what another agency recorded -----------------------------------------------
def test_only_the_recorder_or_the_childs_social_care_may_withdraw_a_record(
    core: RoutingCore,
) -> None:
    assert kinds(core.handle(on(T.consent(CSC), consent(CSC, "GIVEN")))) == ["CONSENT"]
    assert decisions(core)["torbay-mash"] == "SHARED"
    # The return-home service may record consent, but not withdraw social care's.
    refused = core.handle(on(T.consent(RHI), consent(RHI, "WITHDRAWN")))
    assert refused.quarantined == "NOT_ENTITLED"
    assert decisions(core)["torbay-mash"] == "SHARED"
    # Social care withdraws its own record; then the service's record of new consent
    # would replace social care's withdrawal: refused too.
    assert kinds(core.handle(on(T.consent(CSC), consent(CSC, "WITHDRAWN")))) == ["CONSENT"]
    assert decisions(core)["torbay-mash"] == "WITHHELD"
    assert core.handle(on(T.consent(RHI), consent(RHI, "GIVEN"))).quarantined == "NOT_ENTITLED"
    # Social care may withdraw what the service recorded (withdraw_others).
    other = _core()
    assert kinds(other.handle(on(T.consent(RHI), consent(RHI, "GIVEN")))) == ["CONSENT"]
    routed = other.handle(on(T.consent(CSC), consent(CSC, "WITHDRAWN")))
    assert kinds(routed) == ["CONSENT"]
    assert json.loads(routed.leaves[0])["rule_id"] == "childs-social-care"
    assert decisions(other)["torbay-mash"] == "WITHHELD"


def test_a_consent_record_is_applied_once(core: RoutingCore) -> None:
    data = consent(RHI)
    assert kinds(core.handle(on(T.consent(RHI), data))) == ["CONSENT"]
    again = core.handle(on(T.consent(RHI), data))
    assert again.duplicate and kinds(again) == ["DUPLICATE"]


# -- the audit, and the state rebuilt from it ---------------------------------------------------
def _leaf(data: bytes) -> AuditLeaf:
    return AuditLeaf.from_bytes(data)


def test_the_consent_leaf_holds_no_personal_data_and_the_records_digest(
    core: RoutingCore,
) -> None:
    data = consent(RHI, expires_at=NOW + DAY)
    leaf = _leaf(core.handle(on(T.consent(RHI), data)).leaves[0])
    assert leaf.outcome == "GIVEN" and leaf.consent_purpose == "SAFEGUARDING"
    assert leaf.source_agency == RHI and leaf.rule_id == "return-home-interviewers"
    assert leaf.subject == core.subject_hmac(CHILD) and CHILD.encode() not in leaf.to_bytes()
    assert leaf.event_digest == hashlib.sha256(data).hexdigest()
    assert leaf.consent_expires_ms == NOW + DAY and leaf.consent_ref is None
    assert leaf.policy_digest == core.decider.digest


def test_the_state_rebuilt_from_the_audit_leaves_is_the_state_routing_used(
    core: RoutingCore,
) -> None:
    """A restarted router knows only what its audit log says was applied: the school's
    forged records, quarantined, have no CONSENT leaf and never count."""
    leaves: list[bytes] = []
    for topic, data in [
        (T.consent(SCHOOL), consent(SCHOOL, "GIVEN")),
        (T.consent(SCHOOL), consent(RHI, "GIVEN")),
        (T.consent(RHI), consent(RHI, "GIVEN")),
        (T.consent(SCHOOL), consent(SCHOOL, "WITHDRAWN")),
        (T.consent(CSC), consent(CSC, "REFUSED")),
    ]:
        leaves += core.handle(on(topic, data)).leaves
    restarted = _core()
    learned = [restarted.learn_consent_leaf(data) for data in leaves]
    assert learned == [False, False, True, False, True]
    assert decisions(restarted) == decisions(core)
    assert restarted.consents.get(CHILD, "SAFEGUARDING") == core.consents.get(
        CHILD, "SAFEGUARDING"
    )
    assert restarted.consents.get(CHILD, "SAFEGUARDING").status == "REFUSED"


def test_an_aborted_transaction_takes_its_consent_records_back(core: RoutingCore) -> None:
    core.begin_consents()
    assert kinds(core.handle(on(T.consent(RHI), consent(RHI)))) == ["CONSENT"]
    assert decisions(core)["torbay-mash"] == "SHARED"
    core.rollback_consents()
    assert len(core.consents) == 0 and decisions(core)["torbay-mash"] == "WITHHELD"


def test_expiry_is_audited_once_when_a_decision_first_meets_it(core: RoutingCore) -> None:
    given = core.handle(on(T.consent(RHI), consent(RHI, expires_at=NOW + DAY)))
    assert "CONSENT" not in kinds(core.handle(concern()))
    core.clock.set(NOW + DAY)
    lapsed = core.handle(concern())
    expiry = [_leaf(lf) for lf in lapsed.leaves if json.loads(lf)["kind"] == "CONSENT"]
    assert [lf.outcome for lf in expiry] == ["EXPIRED"]
    assert expiry[0].subject == core.subject_hmac(CHILD)
    assert expiry[0].consent_ref == expiry[0].event_id == json.loads(given.leaves[0])["event_id"]
    assert "CONSENT" not in kinds(core.handle(concern()))
    # A restarted router learns from the log that the expiry was audited.
    restarted = _core()
    restarted.clock.set(NOW + DAY)
    for lf in [*given.leaves, *lapsed.leaves]:
        if json.loads(lf)["kind"] == "CONSENT":
            assert restarted.learn_consent_leaf(lf)
    assert "CONSENT" not in kinds(restarted.handle(concern()))
    assert decisions(restarted)["torbay-mash"] == "WITHHELD"
