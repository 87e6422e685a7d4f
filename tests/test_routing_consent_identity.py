"""Consent for a child the router names (no pseudonym from the agency), and what a
person's link, unlink or keep-apart does to it, without Kafka.

Agencies do not know the partnership pseudonym: a consent record, like an
event, may carry only what the agency knows (NHS number, names, date of
birth). The router applies it to the child it is certain of: the child of the
NHS number, or a known child the record links to automatically. A record that
would need a person's review is refused with its reason: consent never lands
on a provisional identity.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

from broker.clock import FixedClock
from broker.identity.linkage import Thresholds
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, Routed, RoutingCore
from broker.routing.identity import SubjectIdentity
from broker.topics import Topics
from tests.helpers import CODEC, example

T = Topics("unit")
NOW = 1_795_000_000_000
POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"
SCHOOL, RHI = "example-academy", "safe-return-charity"
NHS = "9434765919"
CHILD: dict[str, Any] = {
    "pseudonym": None, "local_authority": "E06000027", "given_name": "Jamie",
    "family_name": "Example", "date_of_birth": "2010-03-14", "postcode": "TQ1 1AA",
}  # fmt: skip


def _core(tmp_path: Path) -> RoutingCore:
    identity = SubjectIdentity.from_keys_dir(tmp_path / "keys", Thresholds(), create=True)
    return RoutingCore(
        codec=CODEC, decider=Policy.load(POLICY, field_classes=CODEC.data_classes()),
        consents=ConsentStore(), topics=T, clock=FixedClock(NOW), pseudonym_key=b"k" * 32,
        identity=identity,
    )  # fmt: skip


def _consent(**subject: Any) -> Inbound:
    """A consent record of the return-home service (entitled to record consent)."""
    event = example("consent_record")
    event["subject"] = {**CHILD, **subject}
    event["payload"].update(status="GIVEN", purpose="SAFEGUARDING", scope_roles=[],
                            scope_data_classes=[], expires_at=None)  # fmt: skip
    value = CODEC.encode({**CODEC.from_json(event), "signature": None})
    return Inbound(T.consent(RHI), 0, 1, None, value)


def _concern(**subject: Any) -> Inbound:
    """A school's education concern that reaches the MASH only on consent."""
    event = example("education_concern")
    event["subject"] = {**CHILD, **subject}
    event["sharing"] = {"no_consent_reason": None, "justification": None, "break_glass": False}
    return Inbound(T.ingest(SCHOOL), 0, 2, None, CODEC.encode(CODEC.from_json(event)))


def _mash(routed: Routed) -> str:
    leaves = [json.loads(lf) for lf in routed.leaves]
    return str(next(lf["kind"] for lf in leaves if lf.get("recipient") == "torbay-mash"))


def _index_keys(routed: Routed) -> list[bytes | None]:
    return [o.key for o in routed.outputs if o.topic == T.identity]


def test_consent_by_nhs_number_alone_reaches_the_childs_later_concern(tmp_path: Path) -> None:
    core = _core(tmp_path)
    assert _mash(core.handle(_concern(nhs_number=NHS))) == "WITHHELD"
    applied = core.handle(_consent(nhs_number=NHS, given_name=None, family_name=None))
    assert applied.quarantined is None
    assert [json.loads(lf)["kind"] for lf in applied.leaves] == ["CONSENT"]
    child = core.identity.resolver.keys.of_nhs_number(NHS)  # type: ignore[union-attr]
    assert _index_keys(applied) == [child.encode()]  # the record joins the child's entry
    assert _mash(core.handle(_concern(nhs_number=NHS))) == "SHARED"


def test_consent_without_identifiers_links_only_to_a_child_known_for_certain(
    tmp_path: Path,
) -> None:
    core = _core(tmp_path)
    first = core.handle(_concern(nhs_number=NHS))  # the school's concern names the child
    assert _mash(first) == "WITHHELD"
    # Names, date of birth and postcode only: an automatic link to that child.
    applied = core.handle(_consent())
    assert applied.quarantined is None, applied
    assert _mash(core.handle(_concern(nhs_number=NHS))) == "SHARED"


def test_consent_for_a_child_nobody_can_be_sure_of_is_refused_and_changes_nothing(
    tmp_path: Path,
) -> None:
    core = _core(tmp_path)
    refused = core.handle(_consent())  # no NHS number and no known child to link to
    assert refused.quarantined == "OTHER"
    q = CODEC.decode(refused.outputs[-1].value or b"", "safeshare.QuarantineRecord")
    assert "not one known child for certain" in q["detail"] and "NEW" in q["detail"]
    assert _index_keys(refused) == [] and len(core.consents) == 0
    assert _mash(core.handle(_concern(nhs_number=NHS))) == "WITHHELD"


def test_an_unentitled_record_by_nhs_number_adds_nothing_to_the_index(tmp_path: Path) -> None:
    core = _core(tmp_path)
    event = example("consent_record")
    event["source"] = {"agency_id": SCHOOL, "agency_type": "SCHOOL", "system": "x"}
    event["subject"] = {**CHILD, "nhs_number": NHS}
    value = CODEC.encode({**CODEC.from_json(event), "signature": None})
    refused = core.handle(Inbound(T.consent(SCHOOL), 0, 1, None, value))
    assert refused.quarantined == "NOT_ENTITLED"
    assert _index_keys(refused) == [] and len(core.consents) == 0


def _decision(action: str, survivor: str, other: str, offset: int) -> Inbound:
    """A MASH worker's link or unlink of two children."""
    d = {
        "decision_id": str(uuid.uuid4()), "subscriber_id": "torbay-mash", "action": action,
        "pseudonym": survivor, "other_pseudonym": other, "decided_by": "Alex Worker",
        "review_id": None, "decided_at": NOW,
    }  # fmt: skip
    value = CODEC.encode(d, "safeshare.IdentityDecision")
    return Inbound(T.identity_decisions("torbay-mash"), 0, offset, None, value)


def test_a_refusal_under_a_linked_pseudonym_is_not_forgotten_by_the_link(tmp_path: Path) -> None:
    """Consent given for the child of the NHS number, then refused for a child the
    router knew apart (another pseudonym): once a person links the two, the later
    refusal decides, also for an event that still carries the other pseudonym;
    the unlink gives each child back its own records and name."""
    clock = FixedClock(NOW)
    core = _core(tmp_path)
    core.clock = clock
    known = core.handle(_concern(nhs_number=NHS))
    [child] = _index_keys(known)
    apart = core.handle(_concern(given_name="Jay", date_of_birth="2011-07-02", postcode="EX1 1AA"))
    [other] = _index_keys(apart)
    assert other != child and apart.identity == "NEW"
    clock.advance(1_000)
    assert core.handle(_consent(nhs_number=NHS)).quarantined is None  # GIVEN, the NHS child
    assert _mash(core.handle(_concern(nhs_number=NHS))) == "SHARED"
    clock.advance(1_000)
    refused = _consent(pseudonym=(other or b"").decode(), given_name="Jay")
    event = CODEC.decode(refused.value or b"")
    event["payload"] = ("safeshare.ConsentRecord", {**event["payload"][1], "status": "REFUSED"})
    refused = Inbound(refused.topic, 0, 3, None, CODEC.encode(event))
    assert core.handle(refused).quarantined is None
    assert _mash(core.handle(_concern(nhs_number=NHS))) == "SHARED"  # not linked yet

    clock.advance(1_000)
    linked = core.handle(_decision("LINK", child.decode(), other.decode(), 4))  # type: ignore[union-attr]
    assert linked.identity == "LINKED", linked
    assert _mash(core.handle(_concern(nhs_number=NHS))) == "WITHHELD"
    # An event that still carries the linked-away pseudonym is the linked child's.
    carried = core.handle(_concern(pseudonym=other.decode(), given_name="Jay"))  # type: ignore[union-attr]
    assert {json.loads(lf)["subject"] for lf in carried.leaves} == {
        core.subject_hmac(child.decode())  # type: ignore[union-attr]
    }
    assert _mash(carried) == "WITHHELD"

    clock.advance(1_000)
    unlinked = core.handle(_decision("UNLINK", child.decode(), other.decode(), 5))  # type: ignore[union-attr]
    assert unlinked.identity == "UNLINKED", unlinked
    assert _mash(core.handle(_concern(nhs_number=NHS))) == "SHARED"
    apart_again = core.handle(_concern(pseudonym=other.decode(), given_name="Jay"))  # type: ignore[union-attr]
    assert {json.loads(lf)["subject"] for lf in apart_again.leaves} == {
        core.subject_hmac(other.decode())  # type: ignore[union-attr]
    }
    assert _mash(apart_again) == "WITHHELD"  # its own refusal


def test_replacing_a_linked_childs_consent_needs_the_entitlement_to_replace_it(
    tmp_path: Path,
) -> None:
    """The child's social worker refused consent under the pseudonym a person later
    linked away; the return-home service, which may not replace another agency's
    record, cannot undo that refusal by recording under the surviving pseudonym."""
    clock = FixedClock(NOW)
    core = _core(tmp_path)
    core.clock = clock
    [child] = _index_keys(core.handle(_concern(nhs_number=NHS)))
    [other] = _index_keys(
        core.handle(_concern(given_name="Jay", date_of_birth="2011-07-02", postcode="EX1 1AA"))
    )
    social_care = example("consent_record")
    social_care["source"] = {"agency_id": "torbay-childrens-services",
                             "agency_type": "CHILDRENS_SOCIAL_CARE", "system": "x"}  # fmt: skip
    social_care["subject"] = {**CHILD, "pseudonym": other.decode(), "given_name": "Jay"}  # type: ignore[union-attr]
    social_care["payload"].update(status="REFUSED", purpose="SAFEGUARDING", scope_roles=[],
                                  scope_data_classes=[], expires_at=None)  # fmt: skip
    value = CODEC.encode({**CODEC.from_json(social_care), "signature": None})
    refused = core.handle(Inbound(T.consent("torbay-childrens-services"), 0, 1, None, value))
    assert refused.quarantined is None, refused
    clock.advance(1_000)
    linked = core.handle(_decision("LINK", child.decode(), other.decode(), 2))  # type: ignore[union-attr]
    assert linked.identity == "LINKED", linked
    clock.advance(1_000)
    overridden = core.handle(_consent(nhs_number=NHS))  # GIVEN, by the return-home service
    assert overridden.quarantined == "NOT_ENTITLED", overridden
    assert _mash(core.handle(_concern(nhs_number=NHS))) == "WITHHELD"


def test_two_children_kept_apart_are_audited_and_left_as_they_are(tmp_path: Path) -> None:
    core = _core(tmp_path)
    [child] = _index_keys(core.handle(_concern(nhs_number=NHS)))
    [other] = _index_keys(
        core.handle(_concern(given_name="Jay", date_of_birth="2011-07-02", postcode="EX1 1AA"))
    )
    kept = core.handle(_decision("KEEP_APART", child.decode(), other.decode(), 3))  # type: ignore[union-attr]
    assert kept.identity == "KEPT_APART" and kept.quarantined is None, kept
    [leaf] = [json.loads(lf) for lf in kept.leaves]
    assert (leaf["kind"], leaf["subject"], leaf["identity_other"]) == (
        "KEPT_APART", core.subject_hmac(child.decode()), core.subject_hmac(other.decode()))  # type: ignore[union-attr]
    assert [o for o in kept.outputs if o.topic == T.identity] == []  # the index is unchanged
    assert core.identity is not None and core.identity.survivor_of(other.decode()) is None  # type: ignore[union-attr]
    unknown = core.handle(_decision("KEEP_APART", child.decode(), "v1:nobody", 4))  # type: ignore[union-attr]
    assert unknown.quarantined == "OTHER"
