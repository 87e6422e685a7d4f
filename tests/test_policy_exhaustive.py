"""The whole finite input space of the example policy, against the promises policy makes.

Every combination of source agency x category x risk x no-consent reason (or
none) x justification (blank or not) x the child's area x break-glass x consent
position (none, given, given with a future or past expiry, given to one role
only, given for some data classes only, refused, lapsed refusal, withdrawn),
decided for every registered subscriber (so every role, in and out of area).
The invariants are checked against the test's own account of the inputs, not
against the engine's reasons. The router's compiled path (``decide_all``) must
reach exactly the decisions of the plain path (``decide_all_plainly``, the
steps of ``broker.policy.engine`` as written) on every one of these inputs.
"""

from __future__ import annotations

import contextlib
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from broker.policy import (
    ConsentStore,
    Decision,
    LawfulBasis,
    NoConsentReason,
    ObligationCode,
    Outcome,
    Policy,
    PolicyError,
    ReasonCode,
)
from broker.policy.vocabulary import CATEGORIES, RISK_RANK
from tests.policy_helpers import (
    DEVON,
    EXAMPLE_POLICY,
    FIELD_CLASSES,
    NOW,
    TORBAY,
    consent_event,
    make_event,
)

H72 = 72 * 3600 * 1000
REASONS: list[str | None] = [None, *(str(r) for r in NoConsentReason)]
JUSTIFICATIONS = ["  \t", "Asking the carer would alert the suspected exploiter."]
RISKS = ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
PURPOSES = ["SAFEGUARDING", "RETURN_HOME_SUPPORT"]


@dataclass(frozen=True)
class ConsentCase:
    name: str
    status: str | None  # None: no record
    expires_at: int | None = None
    roles: tuple[str, ...] = ()
    data_classes: tuple[str, ...] = ()

    def valid_for(self, roles: tuple[str, ...]) -> bool:
        """Is there consent the policy may rely on for a subscriber with ``roles``?"""
        if self.status != "GIVEN":
            return False
        if self.expires_at is not None and self.expires_at <= NOW:
            return False
        return not self.roles or bool(set(self.roles) & set(roles))

    def binding_refusal_for(self, roles: tuple[str, ...]) -> bool:
        """A refusal/withdrawal that applies to this subscriber and has not lapsed."""
        if self.status == "WITHDRAWN":
            return not self.roles or bool(set(self.roles) & set(roles))
        if self.status == "REFUSED":
            lapsed = self.expires_at is not None and self.expires_at <= NOW
            return not lapsed and (not self.roles or bool(set(self.roles) & set(roles)))
        return False


CONSENTS = [
    ConsentCase("none", None),
    ConsentCase("given", "GIVEN"),
    ConsentCase("given-until-later", "GIVEN", expires_at=NOW + 1),
    ConsentCase("expired", "GIVEN", expires_at=NOW),
    ConsentCase("given-to-mash-only", "GIVEN", roles=("mash_team",)),
    ConsentCase("given-some-classes", "GIVEN", data_classes=("identity", "health", "referrer")),
    ConsentCase("refused", "REFUSED"),
    ConsentCase("refusal-lapsed", "REFUSED", expires_at=NOW - 1),
    ConsentCase("withdrawn", "WITHDRAWN"),
]


def store_for(case: ConsentCase) -> ConsentStore:
    store = ConsentStore()
    if case.status is not None:
        for n, purpose in enumerate(PURPOSES):
            store.apply(
                consent_event(
                    status=case.status,
                    purpose=purpose,
                    roles=list(case.roles) or None,
                    data_classes=list(case.data_classes) or None,
                    expires_at=case.expires_at,
                    event_id=f"consent-{case.name}-{n}",
                )
            )
    return store


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES)


def holds_value(event: Any, path: list[str]) -> bool:
    """Does ``event`` hold a value at a CONTRACTS.md field path (union branch = a segment)?"""
    if isinstance(event, list):
        return any(holds_value(item, path) for item in event)
    if not path:
        return event is not None
    if isinstance(event, tuple):
        name, body = event
        return name.rsplit(".", 1)[-1] == path[0] and holds_value(body, path[1:])
    return isinstance(event, dict) and holds_value(event.get(path[0]), path[1:])


def check_invariants(
    policy: Policy,
    d: Decision,
    event: dict,
    present: list[str],
    case: ConsentCase,
    seen: Counter[str],
) -> None:
    sub = policy.subscriber(d.subscriber)
    assert sub is not None
    sharing = event["sharing"]
    assert d.policy_digest == policy.digest and d.now_ms == NOW
    # Every field holding a value is either shared or redacted, listed once, in path order.
    assert sorted(d.fields_shared + d.fields_redacted) == present
    assert list(d.fields_shared) == sorted(d.fields_shared)
    assert list(d.fields_redacted) == sorted(d.fields_redacted)

    if d.outcome is Outcome.WITHHOLD:
        seen["withhold"] += 1
        assert d.lawful_basis is None
        assert d.data_classes_shared == frozenset() and d.fields_shared == ()
        assert d.obligations == ()
        assert d.reason_code and d.reason.strip()  # a decision not to share says why
        return
    seen["share"] += 1
    rule = policy.rule(d.rule_id)
    assert rule is not None and rule.shares
    shared_labels = {FIELD_CLASSES[p] for p in d.fields_shared}
    redacted_labels = {FIELD_CLASSES[p] for p in d.fields_redacted}
    assert shared_labels <= d.data_classes_shared and not redacted_labels & d.data_classes_shared
    assert "metadata" in d.data_classes_shared  # routing facts always kept

    # A school safeguarding lead never receives health data.
    if "school_dsl" in sub.roles:
        seen["school-share"] += 1
        assert "health" not in d.data_classes_shared and "health" not in shared_labels

    # Referrer / third-party identities only where the deciding rule names them.
    for protected in ("referrer", "third_party"):
        if protected in d.data_classes_shared or protected in shared_labels:
            seen[f"{protected}-share"] += 1
            assert protected in rule.explicit_grants

    # Nothing without valid consent unless every override condition holds.
    roles = (
        sub.roles
        if rule.subscriber_roles is None
        else tuple(r for r in sub.roles if r in rule.subscriber_roles)
    )
    if d.lawful_basis is LawfulBasis.CONSENT:
        seen["consent-share"] += 1
        assert case.valid_for(roles), (case, d)
        assert d.consent_ref is not None and d.consent_ref.startswith(f"consent-{case.name}-")
        if case.data_classes:
            assert d.data_classes_shared <= set(case.data_classes) | {"metadata"}
    else:
        seen["override-share"] += 1
        assert not case.valid_for(roles)
        assert d.consent_ref is None
        assert rule.override_min_risk is not None
        assert RISK_RANK[event["risk_level"]] >= RISK_RANK[rule.override_min_risk]
        assert sharing["no_consent_reason"] in {str(r) for r in NoConsentReason}
        assert sharing["justification"] and sharing["justification"].strip()
        if case.binding_refusal_for(roles):
            seen["refusal-overridden"] += 1
            assert sharing["no_consent_reason"] == "WOULD_PREJUDICE_PROTECTION"

    # A withdrawn or expired consent is never relied on.
    if case.status == "WITHDRAWN" or (case.expires_at is not None and case.expires_at <= NOW):
        assert d.lawful_basis is not LawfulBasis.CONSENT and d.consent_ref is None

    # The lawful basis matches the kind of recipient.
    if sub.law_enforcement:
        assert d.lawful_basis in (LawfulBasis.CONSENT, LawfulBasis.LAW_ENFORCEMENT_SAFEGUARDING)
    else:
        assert d.lawful_basis in (LawfulBasis.CONSENT, LawfulBasis.SAFEGUARDING)

    # Every break-glass share carries the 72-hour review.
    if sharing["break_glass"]:
        seen["break-glass-share"] += 1
        assert (ObligationCode.REVIEW_WITHIN_72H, NOW + H72) in {
            (o.code, o.due_at_ms) for o in d.obligations
        }

    # Out of area: nothing without a cross-area rule.
    if event["subject"]["local_authority"] not in sub.local_authorities:
        seen["cross-area-share"] += 1
        assert rule.cross_area


def test_every_input_combination_keeps_every_promise(policy: Policy) -> None:
    seen: Counter[str] = Counter()
    stores = {c.name: store_for(c) for c in CONSENTS}
    n = 0
    for agency, category in itertools.product(policy.agencies, sorted(CATEGORIES)):
        # Within one agency and category the events differ in which fields hold a
        # value only by the no-consent reason (the other varied fields are never null).
        present_when: dict[bool, list[str]] = {}
        for risk, reason, justification, la, break_glass, case in itertools.product(
            RISKS, REASONS, JUSTIFICATIONS, (TORBAY, DEVON), (False, True), CONSENTS
        ):
            event = make_event(
                agency=agency.id,
                agency_type=agency.type,
                category=category,
                risk=risk,
                la=la,
                reason=reason,
                justification=justification,
                break_glass=break_glass,
            )
            present = present_when.get(reason is None)
            if present is None:
                present = sorted(p for p in FIELD_CLASSES if holds_value(event, p.split(".")))
                present_when[reason is None] = present
            store = stores[case.name]
            decisions = policy.decide_all(event, store, NOW)
            assert [d.subscriber for d in decisions] == [s.id for s in policy.subscribers]
            assert decisions == policy.decide_all_plainly(event, store, NOW)
            for d in decisions:
                check_invariants(policy, d, event, present, case, seen)
                n += 1
            # An unknown subscriber gets nothing, whatever the event.
            u = policy.decide(event, "not-registered", store, NOW)
            assert u.outcome is Outcome.WITHHOLD
            assert u.reason_code is ReasonCode.UNKNOWN_SUBSCRIBER
            assert u.data_classes_shared == frozenset() and u.fields_shared == ()
    # The space really was covered, and each invariant was exercised, not vacuous.
    assert n == (len(policy.agencies) * len(CATEGORIES) * 4 * 4 * 2 * 2 * 2 * len(CONSENTS)
                 * len(policy.subscribers))
    for what in (
        "share",
        "withhold",
        "consent-share",
        "override-share",
        "refusal-overridden",
        "school-share",
        "referrer-share",
        "third_party-share",
        "break-glass-share",
        "cross-area-share",
    ):
        assert seen[what] > 0, f"no decision exercised {what}: {seen}"


def test_digest_is_stable_under_reformatting_and_changes_with_any_rule(policy: Policy) -> None:
    text = EXAMPLE_POLICY.read_text(encoding="utf-8")
    data = yaml.safe_load(text)
    variants = [
        yaml.safe_dump(data, sort_keys=True, default_flow_style=False),
        yaml.safe_dump(data, sort_keys=False, default_flow_style=True, width=60),
        "# reviewed by the DPO\n"
        + text.replace("\n", "   # note\n", 3).replace("  - id:", "  -\n    id:"),
    ]
    for v in variants:
        assert Policy.from_text(v, field_classes=FIELD_CLASSES).digest == policy.digest
    digests = {policy.digest}
    for i, rule in enumerate(data["rules"]):
        for change in ("description", "order"):
            changed = yaml.safe_load(text)
            if change == "description":
                changed["rules"][i]["description"] = rule["description"] + " (amended)"
            elif i + 1 < len(data["rules"]):
                rules = changed["rules"]
                rules[i], rules[i + 1] = rules[i + 1], rules[i]
            else:
                continue
            # a swap may make a rule unreachable: such a policy is refused, not versioned
            with contextlib.suppress(PolicyError):
                digests.add(
                    Policy.from_text(yaml.safe_dump(changed), field_classes=FIELD_CLASSES).digest
                )
    assert len(digests) >= len(data["rules"]) + 1
