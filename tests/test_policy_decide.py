"""Policy decisions on the example Torbay MASH policy: what each subscriber gets, and why."""

from __future__ import annotations

import dataclasses
import threading

import pytest

import broker.policy.engine as engine
from broker.policy import (
    DEFAULT_DENY,
    ConsentRecord,
    ConsentStatus,
    ConsentStore,
    LawfulBasis,
    ObligationCode,
    Outcome,
    Policy,
    ReasonCode,
    explain,
)
from tests.policy_helpers import (
    DEVON,
    EXAMPLE_POLICY,
    FIELD_CLASSES,
    JUST,
    NOW,
    OVERRIDE,
    TORBAY,
    consent_event,
    consent_positions,
    make_event,
    odd_events,
)

H72 = 72 * 3600 * 1000


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES)


def by_sub(policy: Policy, event: dict, store: ConsentStore | None = None, now: int = NOW):
    return {d.subscriber: d for d in policy.decide_all(event, store or ConsentStore(), now)}


# -- need to know: one event, different copies -----------------------------------


def test_subscribers_receive_different_fields_of_the_same_event(policy: Policy) -> None:
    d = by_sub(policy, make_event(category="MISSING_EPISODE", **OVERRIDE))
    mash, school = d["torbay-mash"], d["example-academy-dsl"]
    police, rhi = d["dc-police-exploitation"], d["safe-return-rhi"]
    assert all(x.outcome is Outcome.SHARE for x in (mash, school, police, rhi))
    where = "payload.MissingEpisode.last_seen.place"
    ref = "payload.MissingEpisode.police_reference"
    assert where in mash.fields_shared and ref in mash.fields_shared
    assert where in police.fields_shared and ref in police.fields_shared
    assert where in rhi.fields_shared and ref in rhi.fields_redacted
    # the school is told *that* the child went missing, not where, nor the police detail
    assert "subject.given_name" in school.fields_shared and "summary" in school.fields_shared
    assert where in school.fields_redacted and ref in school.fields_redacted
    assert school.data_classes_shared == {"metadata", "pseudonym", "identity", "concern_summary"}


def test_fields_shared_and_redacted_partition_the_fields_present(policy: Policy) -> None:
    event = make_event(**OVERRIDE)
    present = {
        "subject.given_name",
        "reporter.name",
        "payload.MissingEpisode.last_seen.place",
        "source.agency_id",
    }
    for d in policy.decide_all(event, ConsentStore(), NOW):
        both = set(d.fields_shared) | set(d.fields_redacted)
        assert not set(d.fields_shared) & set(d.fields_redacted)
        assert present <= both
        # null fields are neither shared nor redacted: there is nothing there
        assert "payload.MissingEpisode.found.place" not in both
        assert "subject.upn" not in both
        if d.outcome is Outcome.SHARE:
            assert "source.agency_id" in d.fields_shared  # metadata always kept
            assert "metadata" in d.data_classes_shared
            assert all(FIELD_CLASSES[p] in d.data_classes_shared for p in d.fields_shared)
            assert all(FIELD_CLASSES[p] not in d.data_classes_shared for p in d.fields_redacted)
        else:
            assert d.fields_shared == () and d.data_classes_shared == frozenset()


def test_referrer_and_third_parties_only_where_a_rule_grants_them(policy: Policy) -> None:
    event = make_event(
        category="RETURN_HOME_INTERVIEW",
        agency="safe-return-charity",
        agency_type="VOLUNTARY",
        **OVERRIDE,
    )
    d = by_sub(policy, event)
    people = "payload.ReturnHomeInterview.people_mentioned.relationship"
    assert "reporter.name" in d["torbay-csc"].fields_shared  # explicit_grants: [referrer, ...]
    assert people in d["torbay-csc"].fields_shared
    assert people in d["dc-police-exploitation"].fields_shared  # explicit_grants: [third_party]
    assert "reporter.name" in d["dc-police-exploitation"].fields_redacted
    assert "reporter.name" in d["torbay-mash"].fields_redacted
    assert people in d["torbay-mash"].fields_redacted


def test_school_never_receives_what_health_publishes(policy: Policy) -> None:
    event = make_event(
        agency="torbay-hospital", agency_type="HEALTH", category="HEALTH_CONCERN", **OVERRIDE
    )
    d = by_sub(policy, event)
    school = d["example-academy-dsl"]
    assert school.outcome is Outcome.WITHHOLD
    assert school.rule_id == "school-never-receives-health"
    assert school.reason_code is ReasonCode.RULE_WITHHOLD
    assert "confidential" in school.reason
    assert d["torbay-health-safeguarding"].outcome is Outcome.SHARE
    assert "payload.HealthConcern.sexual_health" in d["torbay-mash"].fields_shared
    # the police exploitation team has no rule for health concerns: default deny
    assert d["dc-police-exploitation"].rule_id == DEFAULT_DENY
    assert d["dc-police-exploitation"].reason_code is ReasonCode.NO_MATCHING_RULE


def test_a_school_in_another_area_gets_nothing(policy: Policy) -> None:
    d = by_sub(policy, make_event(**OVERRIDE))
    other = d["newton-abbot-college-dsl"]
    assert other.outcome is Outcome.WITHHOLD
    assert other.reason_code is ReasonCode.OUT_OF_AREA
    assert DEVON in other.reason
    # ...while a Devon child's episode reaches it, and not the Torbay school
    d = by_sub(policy, make_event(la=DEVON, **OVERRIDE))
    assert d["newton-abbot-college-dsl"].outcome is Outcome.SHARE
    assert d["example-academy-dsl"].reason_code is ReasonCode.OUT_OF_AREA


# -- consent ------------------------------------------------------------------


def education_event(**kw: object) -> dict:
    return make_event(
        agency="example-academy",
        agency_type="SCHOOL",
        category="EDUCATION_CONCERN",
        risk="MEDIUM",
        **kw,  # type: ignore[arg-type]
    )


def test_consent_given_then_withdrawn_stops_later_shares(policy: Policy) -> None:
    store = ConsentStore()
    store.apply(consent_event(status="GIVEN", event_id="consent-1"))
    first = policy.decide(education_event(), "example-academy-dsl", store, NOW)
    assert first.outcome is Outcome.SHARE
    assert first.lawful_basis is LawfulBasis.CONSENT
    assert first.consent_ref == "consent-1"
    assert first.reason_code is ReasonCode.CONSENT_GIVEN

    store.apply(consent_event(status="WITHDRAWN", event_id="consent-2"))
    later = policy.decide(education_event(), "example-academy-dsl", store, NOW + 1)
    assert later.outcome is Outcome.WITHHOLD
    assert later.reason_code is ReasonCode.CONSENT_WITHDRAWN
    assert later.consent is not None and later.consent.record_id == "consent-2"
    assert later.consent_ref is None  # a withdrawal is never relied on

    store.delete("child-0001", "SAFEGUARDING")  # a tool's delete (the router never deletes)
    gone = policy.decide(education_event(), "example-academy-dsl", store, NOW + 2)
    assert gone.reason_code is ReasonCode.NO_CONSENT and gone.consent_status is ConsentStatus.NONE


def test_consent_expires_at_its_expiry_time(policy: Policy) -> None:
    store = ConsentStore()
    store.apply(consent_event(status="GIVEN", expires_at=NOW))
    before = policy.decide(education_event(), "example-academy-dsl", store, NOW - 1)
    at = policy.decide(education_event(), "example-academy-dsl", store, NOW)
    assert before.outcome is Outcome.SHARE
    assert at.outcome is Outcome.WITHHOLD and at.reason_code is ReasonCode.CONSENT_EXPIRED


def test_consent_scope_limits_roles_and_data_classes(policy: Policy) -> None:
    store = ConsentStore()
    store.apply(consent_event(status="GIVEN", roles=["mash_team"], data_classes=["identity"]))
    event = education_event()
    d = by_sub(policy, event, store)
    assert d["example-academy-dsl"].reason_code is ReasonCode.NO_CONSENT  # role not in scope
    mash = d["torbay-mash"]
    assert mash.lawful_basis is LawfulBasis.CONSENT
    assert mash.data_classes_shared == {"metadata", "identity"}
    assert "subject.given_name" in mash.fields_shared
    assert "payload.EducationConcern.attendance_percent" in mash.fields_redacted


def test_consent_for_another_purpose_or_child_does_not_count(policy: Policy) -> None:
    store = ConsentStore()
    store.apply(consent_event(status="GIVEN", purpose="EARLY_HELP"))
    store.apply(consent_event(status="GIVEN", subject="child-0002"))
    d = policy.decide(education_event(), "example-academy-dsl", store, NOW)
    assert d.reason_code is ReasonCode.NO_CONSENT


# -- sharing without consent ----------------------------------------------------------


@pytest.mark.parametrize(
    ("risk", "reason", "justification", "code"),
    [
        ("MEDIUM", "WOULD_PREJUDICE_PROTECTION", JUST, ReasonCode.OVERRIDE_RISK_TOO_LOW),
        ("HIGH", None, JUST, ReasonCode.OVERRIDE_NO_REASON),
        ("HIGH", "BECAUSE", JUST, ReasonCode.OVERRIDE_NO_REASON),
        ("HIGH", "CANNOT_BE_GIVEN", "   \n", ReasonCode.OVERRIDE_NO_JUSTIFICATION),
        ("HIGH", "CANNOT_BE_GIVEN", None, ReasonCode.OVERRIDE_NO_JUSTIFICATION),
        ("HIGH", "CANNOT_BE_GIVEN", JUST, ReasonCode.SHARED_WITHOUT_CONSENT),
        ("CRITICAL", "CANNOT_REASONABLY_BE_OBTAINED", JUST, ReasonCode.SHARED_WITHOUT_CONSENT),
    ],
)
def test_sharing_without_consent_needs_risk_reason_and_justification(
    policy: Policy, risk: str, reason: str | None, justification: str | None, code: ReasonCode
) -> None:
    # health-safeguarding-team: without_consent.min_risk HIGH
    event = make_event(risk=risk, reason=reason, justification=justification)
    d = policy.decide(event, "torbay-health-safeguarding", ConsentStore(), NOW)
    assert d.reason_code is code
    if code is ReasonCode.SHARED_WITHOUT_CONSENT:
        assert d.outcome is Outcome.SHARE
        assert d.lawful_basis is LawfulBasis.SAFEGUARDING
        assert d.no_consent_reason == reason and d.consent_ref is None
    else:
        assert d.outcome is Outcome.WITHHOLD and d.lawful_basis is None


@pytest.mark.parametrize("status", ["REFUSED", "WITHDRAWN"])
def test_a_refusal_is_overridden_only_when_asking_would_prejudice_protection(
    policy: Policy, status: str
) -> None:
    store = ConsentStore()
    store.apply(consent_event(status=status, event_id="refusal-1"))
    for reason in ("CANNOT_BE_GIVEN", "CANNOT_REASONABLY_BE_OBTAINED"):
        event = make_event(reason=reason, justification=JUST)
        d = policy.decide(event, "torbay-mash", store, NOW)
        assert d.outcome is Outcome.WITHHOLD
        assert d.reason_code is ReasonCode.OVERRIDE_REASON_CONTRADICTED
    d = policy.decide(make_event(**OVERRIDE), "torbay-mash", store, NOW)
    assert d.outcome is Outcome.SHARE and d.reason_code is ReasonCode.SHARED_WITHOUT_CONSENT
    assert d.consent is not None and d.consent.record_id == "refusal-1"  # what was overridden
    assert d.consent_ref is None


def test_a_rule_without_override_never_shares_without_consent(policy: Policy) -> None:
    event = education_event(reason="WOULD_PREJUDICE_PROTECTION", justification=JUST)
    event["risk_level"] = "CRITICAL"
    d = policy.decide(event, "example-academy-dsl", ConsentStore(), NOW)
    assert d.outcome is Outcome.WITHHOLD and d.reason_code is ReasonCode.NO_CONSENT


def test_lawful_basis_depends_on_the_recipient(policy: Policy) -> None:
    d = by_sub(policy, make_event(**OVERRIDE))
    assert d["dc-police-exploitation"].lawful_basis is LawfulBasis.LAW_ENFORCEMENT_SAFEGUARDING
    assert d["torbay-mash"].lawful_basis is LawfulBasis.SAFEGUARDING
    assert "Sch 8 para 4" in LawfulBasis.LAW_ENFORCEMENT_SAFEGUARDING.text
    assert "Sch 1 para 18" in LawfulBasis.SAFEGUARDING.text
    store = ConsentStore()
    store.apply(consent_event(status="GIVEN"))
    d = by_sub(policy, make_event(), store)
    assert d["dc-police-exploitation"].lawful_basis is LawfulBasis.CONSENT


# -- break-glass ----------------------------------------------------------------


def test_break_glass_reaches_the_neighbouring_mash_with_a_72h_review(policy: Policy) -> None:
    normal = by_sub(policy, make_event(**OVERRIDE))
    assert normal["devon-mash"].reason_code is ReasonCode.OUT_OF_AREA
    d = by_sub(policy, make_event(break_glass=True, **OVERRIDE), now=NOW)
    devon = d["devon-mash"]
    assert devon.outcome is Outcome.SHARE and devon.rule_id == "break-glass-missing-child"
    assert [(o.code, o.due_at_ms) for o in devon.obligations] == [
        (ObligationCode.REVIEW_WITHIN_72H, NOW + H72)
    ]
    assert "payload.MissingEpisode.last_seen.place" in devon.fields_shared
    assert "subject.social_care_status" in devon.fields_shared
    # every share of a break-glass event carries the review, whichever rule shared it
    for x in d.values():
        if x.outcome is Outcome.SHARE:
            assert ObligationCode.REVIEW_WITHIN_72H in {o.code for o in x.obligations}
    # break-glass is not a lawful basis: without the override conditions, nothing
    bare = by_sub(policy, make_event(break_glass=True))
    assert all(x.outcome is Outcome.WITHHOLD for x in bare.values())


# -- fail closed ------------------------------------------------------------------


def test_unknown_subscriber_gets_a_withhold_decision(policy: Policy) -> None:
    d = policy.decide(make_event(**OVERRIDE), "tabloid-newsdesk", ConsentStore(), NOW)
    assert d.outcome is Outcome.WITHHOLD
    assert d.reason_code is ReasonCode.UNKNOWN_SUBSCRIBER
    assert d.subscriber == "tabloid-newsdesk" and d.rule_id == DEFAULT_DENY
    assert d.policy_digest == policy.digest and d.now_ms == NOW


def test_unknown_agency_withholds_from_everyone(policy: Policy) -> None:
    event = make_event(agency="rogue-agency", **OVERRIDE)
    ds = policy.decide_all(event, ConsentStore(), NOW)
    assert [d.subscriber for d in ds] == [s.id for s in policy.subscribers]
    assert {d.reason_code for d in ds} == {ReasonCode.UNKNOWN_AGENCY}
    assert policy.agency("rogue-agency") is None
    assert policy.agency("devon-cornwall-police") is not None


@pytest.mark.parametrize(
    "breakage",
    [
        lambda e: e.pop("risk_level"),
        lambda e: e.__setitem__("risk_level", "SEVERE"),
        lambda e: e.__setitem__("source", None),
        lambda e: e.__setitem__("subject", "child"),
        lambda e: e.clear(),
    ],
)
def test_a_malformed_event_is_withheld_not_raised(policy: Policy, breakage) -> None:  # type: ignore[no-untyped-def]
    event = make_event(**OVERRIDE)
    breakage(event)
    ds = policy.decide_all(event, ConsentStore(), NOW)
    assert len(ds) == len(policy.subscribers)
    assert {d.reason_code for d in ds} == {ReasonCode.MALFORMED_EVENT}
    assert all(d.outcome is Outcome.WITHHOLD for d in ds)


def test_decisions_are_frozen_values_in_registry_order(policy: Policy) -> None:
    ds = policy.decide_all(make_event(**OVERRIDE), ConsentStore(), NOW)
    assert [d.subscriber for d in ds] == [s.id for s in policy.subscribers]
    assert len(ds) == 11
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds[0].outcome = Outcome.SHARE  # type: ignore[misc]
    assert all(d.policy_digest == policy.digest and d.now_ms == NOW for d in ds)
    # same inputs, same decisions
    assert ds == policy.decide_all(make_event(**OVERRIDE), ConsentStore(), NOW)
    assert all(isinstance(d.as_dict()["outcome"], str) for d in ds)


def test_registry_derives_topics_from_ids(policy: Policy) -> None:
    police = policy.agency("devon-cornwall-police")
    assert police is not None and police.ingest_topic() == "safeshare.ingest.devon-cornwall-police"
    mash = policy.subscriber("torbay-mash")
    assert mash is not None and mash.feed_topic() == "safeshare.feed.torbay-mash"


# -- consent store --------------------------------------------------------------


def test_consent_store_keeps_the_latest_record_per_child_and_purpose() -> None:
    store = ConsentStore()
    store.apply(consent_event(status="REFUSED", event_id="a"))
    store.apply(consent_event(status="GIVEN", event_id="b"))
    store.apply(consent_event(status="GIVEN", purpose="EARLY_HELP", event_id="c"))
    assert len(store) == 2
    state = store.lookup("child-0001", "SAFEGUARDING", "mash_team", NOW)
    assert state.status is ConsentStatus.GIVEN and state.record_id == "b"
    with pytest.raises(ValueError):
        bad = consent_event(status="GIVEN")
        bad["payload"][1]["status"] = None
        ConsentRecord.from_event(bad)


# -- explain --------------------------------------------------------------------


def test_explain_tells_a_dpo_what_was_shared_redacted_and_why(policy: Policy) -> None:
    store = ConsentStore()
    store.apply(consent_event(status="REFUSED", event_id="refusal-9"))
    d = policy.decide(
        make_event(break_glass=True, **OVERRIDE), "dc-police-exploitation", store, NOW
    )
    text = explain(d, policy)
    assert "SHARE" in text and "break-glass-missing-child" in text
    assert "Sch 8 para 4" in text
    assert "would prejudice the child's protection" in text
    assert "refusal-9" in text and "overridden" in text
    assert "reporter.name" in text and "explicitly grants" in text
    assert "REVIEW_WITHIN_72H: due 2026-01-04 00:00:00 UTC" in text

    w = policy.decide(make_event(**OVERRIDE), "newton-abbot-college-dsl", store, NOW)
    text = explain(w, policy)
    assert "WITHHOLD" in text and "OUT_OF_AREA" in text and "Shared: nothing" in text


def test_fast_built_decisions_equal_ordinary_ones(policy: Policy) -> None:
    from broker.policy import Decision

    for d in policy.decide_all(make_event(break_glass=True, **OVERRIDE), ConsentStore(), NOW):
        again = Decision(**vars(d))
        assert again == d and hash(again) == hash(d) and repr(again) == repr(d)


def test_every_element_of_an_array_counts_and_each_path_is_listed_once(policy: Policy) -> None:
    event = make_event(
        category="RETURN_HOME_INTERVIEW",
        agency="safe-return-charity",
        agency_type="VOLUNTARY",
        **OVERRIDE,
    )
    name, body = event["payload"]
    event["payload"] = (
        name,
        {
            **body,
            "places_mentioned": [
                {"place": None, "area": "Paignton", "postcode_district": None},
                None,
                {"place": "flat above takeaway", "area": "Brixham", "postcode_district": None},
            ],
        },
    )
    places = "payload.ReturnHomeInterview.places_mentioned"
    for d in policy.decide_all(event, ConsentStore(), NOW):
        listed = d.fields_shared + d.fields_redacted
        assert listed.count(f"{places}.area") == 1 and listed.count(f"{places}.place") == 1
        assert f"{places}.postcode_district" not in listed  # null in every element
        assert list(d.fields_redacted) == sorted(d.fields_redacted)


def test_the_routers_path_reaches_the_plain_paths_decisions(policy: Policy) -> None:
    # decide_all works from remembered plans; decide() reads the rules afresh each time.
    for store in consent_positions():
        for event in odd_events():
            for _ in range(2):  # a second time from the remembered plan
                fast = policy.decide_all(event, store, NOW)
                assert fast == policy.decide_all_plainly(event, store, NOW)
                assert fast == [policy.decide(event, s.id, store, NOW) for s in policy.subscribers]
                assert [d.as_dict() for d in fast] == [
                    d.as_dict() for d in policy.decide_all_plainly(event, store, NOW)
                ]


def test_remembered_plans_stay_bounded_and_forgetting_one_changes_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engine, "_PLAN_CACHE_LIMIT", 3)
    monkeypatch.setattr(engine, "_SHAPE_CACHE_LIMIT", 4)
    monkeypatch.setattr(engine, "_OUTCOME_CACHE_LIMIT", 2)
    policy = Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES)
    # forty local authorities (forty plans), and four shapes of event, from four threads
    events = [
        make_event(la=f"E06{n:06d}", reason="CANNOT_BE_GIVEN" if n % 2 else None, **kw)
        for n in range(40)
        for kw in ({"justification": JUST}, {"justification": JUST, "break_glass": True})
    ]
    expected = [policy.decide_all_plainly(e, ConsentStore(), NOW) for e in events]
    assert any(d.shared for ds in expected for d in ds)  # break-glass shares cross-area
    failures: list[BaseException] = []

    def route() -> None:
        try:
            for _ in range(3):
                for event, want in zip(events, expected, strict=True):
                    assert policy.decide_all(event, ConsentStore(), NOW) == want
        except BaseException as exc:  # noqa: BLE001 - reported by the test thread below
            failures.append(exc)

    threads = [threading.Thread(target=route) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures[0]
    assert len(policy._plans) <= 3  # the router's memory does not grow with odd facts
    assert len(policy._splits) <= 4 and len(policy._path_sets) <= 4
    assert 0 < len(policy._outcomes) <= 2


def test_remembered_plans_give_the_same_decisions_as_a_cold_policy(policy: Policy) -> None:
    events = [
        make_event(category=c, risk=r, la=la, break_glass=bg, **OVERRIDE)
        for c in ("MISSING_EPISODE", "HEALTH_CONCERN", "EXPLOITATION")
        for r in ("LOW", "HIGH")
        for la in (TORBAY, DEVON)
        for bg in (False, True)
    ]
    warm = [policy.decide_all(e, ConsentStore(), NOW) for e in events + events]
    cold = Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES)
    assert warm == [cold.decide_all(e, ConsentStore(), NOW) for e in events + events]


def test_explain_an_unknown_subscriber(policy: Policy) -> None:
    d = policy.decide(make_event(), "tabloid-newsdesk", ConsentStore(), NOW)
    text = explain(d, policy)
    assert "not a registered subscriber" in text and "UNKNOWN_SUBSCRIBER" in text
