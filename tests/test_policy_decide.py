"""Policy decisions on the example Torbay MASH policy: what each subscriber gets, and why."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import broker.policy.engine as engine
from broker.policy import (
    DEFAULT_DENY,
    ConsentRecord,
    ConsentState,
    ConsentStatus,
    ConsentStore,
    LawfulBasis,
    ObligationCode,
    Outcome,
    Policy,
    ReasonCode,
    explain,
)
from broker.policy._present import fields_present
from broker.policy.vocabulary import CATEGORIES
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
JUST = "Mother's partner is the suspected exploiter; asking would alert him."
OVERRIDE = {"reason": "WOULD_PREJUDICE_PROTECTION", "justification": JUST}


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


def odd_events() -> list[dict[str, Any]]:
    """Events at the edges of what policy reads: each differs from a plain one in one fact."""

    def changed(change: Any, **kw: Any) -> dict[str, Any]:
        event = make_event(**kw)
        change(event)
        return event

    payload_of_another_kind = make_event(category="HEALTH_CONCERN")["payload"]
    return [
        make_event(**OVERRIDE),
        make_event(break_glass=True, la=DEVON, **OVERRIDE),
        make_event(reason="BECAUSE", justification=JUST, risk="CRITICAL"),
        make_event(reason="CANNOT_BE_GIVEN", justification=None),
        make_event(reason="CANNOT_BE_GIVEN", justification=JUST),
        make_event(category="EDUCATION_CONCERN", agency="example-academy", agency_type="SCHOOL"),
        changed(lambda e: e["subject"].__setitem__("local_authority", None), **OVERRIDE),
        changed(lambda e: e["subject"].__setitem__("local_authority", "E06000026"), **OVERRIDE),
        changed(lambda e: e["subject"].__setitem__("pseudonym", None), **OVERRIDE),
        changed(lambda e: e.__setitem__("payload", payload_of_another_kind), **OVERRIDE),
        changed(lambda e: e.__setitem__("sharing", None)),
        changed(lambda e: e["sharing"].__setitem__("break_glass", "yes"), **OVERRIDE),
        changed(lambda e: e.pop("event_id"), **OVERRIDE),
        changed(lambda e: e.__setitem__("risk_level", "SEVERE")),
    ]


def consent_positions() -> list[ConsentStore | None]:
    def store(**kw: Any) -> ConsentStore:
        s = ConsentStore()
        s.apply(consent_event(**kw))
        return s

    return [
        None,
        ConsentStore(),
        store(status="GIVEN"),
        store(status="GIVEN", data_classes=["identity", "location"]),
        store(status="GIVEN", roles=["mash_team"]),
        store(status="GIVEN", expires_at=NOW),
        store(status="REFUSED"),
        store(status="WITHDRAWN"),
    ]


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


# -- the router's path, piece by piece against the plain one ----------------------
#
# decide_all reads an event's facts with exact-type code (Policy._quick_facts), finds
# the fields present with generated code (_present.compile_present) and remembers a
# share step's outcome per consent position (Policy._outcome). Each must give the
# plain path's answer or decline; these tests look for an input where one does not.


class _Record(Mapping[str, Any]):
    """A Mapping that is not a dict: the generated code must hand it to the walk."""

    def __init__(self, data: dict[str, Any]) -> None:
        self._data = data

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)


class _Name(str):
    """A union name that is a str, but not exactly one."""


class _Pair(tuple):  # type: ignore[type-arg]
    """A union value that is a tuple, but not exactly one."""


def _field_tree() -> dict[str, Any]:
    """FIELD_CLASSES as nested dicts (None at a leaf), from the test's own field map."""
    tree: dict[str, Any] = {}
    for path in FIELD_CLASSES:
        node = tree
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = None
    return tree


_SCALARS = st.one_of(st.none(), st.integers(-2, 2), st.text(max_size=2), st.booleans())


def _renamed(pair: tuple[str, Any]) -> tuple[str, Any]:
    return _Name(pair[0]), pair[1]


def _values(tree: dict[str, Any] | None) -> st.SearchStrategy[Any]:
    """Values a decoded event could hold under ``tree``, and many it could not."""
    if tree is None:  # a leaf: any value, or an array of them
        return st.one_of(_SCALARS, st.lists(_SCALARS, max_size=2))
    keys = sorted(tree)
    fields = {k: _values(tree[k]) for k in keys}
    record = st.one_of(
        st.fixed_dictionaries(fields),  # every key: the generated code's own case
        st.fixed_dictionaries({}, optional=fields),  # keys missing: the walk's
        st.fixed_dictionaries(fields, optional={"unknown": _SCALARS}),
    )
    branch = st.sampled_from(keys).flatmap(
        lambda k: st.tuples(
            st.sampled_from([k, f"safeshare.{k}", f"a.b.{k}", "safeshare.Unknown", ""]),
            st.one_of(st.none(), _values(tree[k])),
        )
    )
    return st.one_of(
        _SCALARS,
        record,
        record.map(_Record),
        st.lists(st.one_of(st.none(), record), max_size=3),
        st.lists(st.lists(record, max_size=2), max_size=2),
        branch,
        branch.map(_renamed),
        branch.map(_Pair),
        branch.map(lambda t: (*t, None)),  # three items: no union value
        st.tuples(_SCALARS, record),  # a name that is not a str
    )


_EVENT_VALUES = st.fixed_dictionaries(
    {k: _values(v) for k, v in _field_tree().items()}, optional={"unknown": _SCALARS}
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_EVENT_VALUES, _values(_field_tree())))
def test_the_generated_fields_present_are_the_walks(value: Any) -> None:
    policy = _POLICY
    assert policy._present_compiled(value) == fields_present(value, policy._root)


def test_the_generated_fields_present_of_every_example_event() -> None:
    events = [make_event(category=c, reason="CANNOT_BE_GIVEN") for c in sorted(CATEGORIES)]
    events += [consent_event(status="GIVEN", roles=["mash_team"])]
    for event in events + odd_events():
        want = fields_present(event, _POLICY._root)
        assert want  # not vacuous
        assert _POLICY._present_compiled(event) == want


_POLICY = Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES)
# Where _facts reads an event, and values to put there (or a key to delete).
_FACT_SPOTS = [
    ("event_id",),
    ("source",),
    ("source", "agency_id"),
    ("subject",),
    ("subject", "local_authority"),
    ("subject", "pseudonym"),
    ("sharing",),
    ("sharing", "no_consent_reason"),
    ("sharing", "justification"),
    ("sharing", "break_glass"),
    ("payload",),
    ("risk_level",),
    ("category",),
]
_DELETE = object()
_ODD_VALUES = st.sampled_from(
    [
        _DELETE,
        None,
        "",
        " \t",
        "HIGH",
        "SEVERE",
        _Name("CRITICAL"),
        _Name("WOULD_PREJUDICE_PROTECTION"),
        _Name(TORBAY),
        7,
        True,
        "yes",
        {},
        _Record({"agency_id": "devon-cornwall-police", "pseudonym": "child-0001"}),
        ("safeshare.HealthConcern", None),
        _Pair(("safeshare.MissingEpisode", {"police_reference": "X"})),
        (_Name("safeshare.MissingEpisode"), {}),
        "devon-cornwall-police",
        "not-registered-agency",
        "CANNOT_BE_GIVEN",
        "WOULD_PREJUDICE_PROTECTION",
        "BECAUSE",
        "MISSING_EPISODE",
        DEVON,
        TORBAY,
        "x",
    ]
)


@st.composite
def _events_at_the_edges(draw: st.DrawFn) -> Any:
    """An example event with up to three of the facts policy reads changed."""
    event = make_event(
        category=draw(st.sampled_from(["MISSING_EPISODE", "HEALTH_CONCERN", "EXPLOITATION"])),
        agency=draw(st.sampled_from(["devon-cornwall-police", "torbay-hospital"])),
        risk=draw(st.sampled_from(["LOW", "MEDIUM", "HIGH", "CRITICAL"])),
        la=draw(st.sampled_from([TORBAY, DEVON])),
        reason=draw(st.sampled_from([None, "CANNOT_BE_GIVEN", "WOULD_PREJUDICE_PROTECTION"])),
        justification=draw(st.sampled_from([None, "", JUST])),
        break_glass=draw(st.booleans()),
    )
    for spot in draw(st.lists(st.sampled_from(_FACT_SPOTS), min_size=1, max_size=3)):
        *parents, key = spot
        holder: Any = event
        for part in parents:
            holder = holder.get(part) if isinstance(holder, dict) else None
        if not isinstance(holder, dict):
            continue
        value = draw(_ODD_VALUES)
        if value is _DELETE:
            holder.pop(key, None)
        else:
            holder[key] = value
    return _Record(event) if draw(st.integers(0, 9)) == 0 else event


_STORES = consent_positions()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_events_at_the_edges())
def test_quick_facts_are_the_plain_facts_or_decline(event: Any) -> None:
    policy = _POLICY
    quick = policy._quick_facts(event)
    assert quick is None or quick == policy._facts(event, NOW)
    for store in _STORES:
        assert policy.decide_all(event, store, NOW) == policy.decide_all_plainly(event, store, NOW)


def test_quick_facts_read_a_plain_event_and_decline_the_rest() -> None:
    # not vacuous: the fast reader does read ordinary events, and does decline odd ones
    plain = make_event(reason="WOULD_PREJUDICE_PROTECTION", justification=JUST)
    assert _POLICY._quick_facts(plain) == _POLICY._facts(plain, NOW)
    declined = [e for e in odd_events() if _POLICY._quick_facts(e) is None]
    assert 0 < len(declined) < len(odd_events())


class _Lookup:
    """A consent lookup of another kind than ConsentStore: whatever it is told to answer."""

    def __init__(self, state: ConsentState) -> None:
        self.state = state

    def lookup(self, subject: str, purpose: str, role: str, now_ms: int) -> ConsentState:
        return self.state


def test_remembered_outcomes_never_carry_one_childs_consent_to_another() -> None:
    policy = Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES)
    store = ConsentStore()
    for n, scope in enumerate([None, ["identity", "health"], None]):
        store.apply(
            consent_event(
                status="GIVEN",
                subject=f"child-{n}",
                data_classes=scope,
                event_id=f"c0c0c0c0-0000-4000-8000-00000000000{n}",
            )
        )
    # states of other kinds than ConsentStore's: a plain-str status, a set as scope
    record = ConsentRecord("rec-x", "child-0", "SAFEGUARDING", "GIVEN")
    a_set: Any = {"identity"}
    odd = [
        _Lookup(ConsentState("REFUSED", record)),  # type: ignore[arg-type]
        _Lookup(ConsentState(ConsentStatus.GIVEN, dataclasses.replace(record, data_classes=a_set))),
        _Lookup(ConsentState(ConsentStatus.WITHDRAWN, dataclasses.replace(record, record_id=""))),
    ]
    refs = set()
    for _ in range(2):
        for n in (0, 1, 2, 3, 0):
            for reason in (None, "WOULD_PREJUDICE_PROTECTION"):
                event = make_event(subject=f"child-{n}", reason=reason, justification=JUST)
                lookups: list[Any] = [store, *odd, store]
                for lookup in lookups:
                    got = policy.decide_all(event, lookup, NOW)
                    assert got == policy.decide_all_plainly(event, lookup, NOW)
                    refs |= {d.consent_ref for d in got}
    assert {"c0c0c0c0-0000-4000-8000-000000000000", "c0c0c0c0-0000-4000-8000-000000000002"} <= refs


# -- consent lookups from states built when the record is put ---------------------


def test_a_lookup_after_apply_sees_the_new_record_not_the_old_state() -> None:
    store = ConsentStore()
    given_a = consent_event(status="GIVEN", event_id="a")
    store.apply(given_a)
    first = store.lookup("child-0001", "SAFEGUARDING", "police", NOW)
    assert first.status is ConsentStatus.GIVEN and first.record_id == "a"
    store.apply(consent_event(status="WITHDRAWN", event_id="b"))
    state = store.lookup("child-0001", "SAFEGUARDING", "police", NOW)
    assert state.status is ConsentStatus.WITHDRAWN and state.record_id == "b"
    # a partial withdrawal: a new GIVEN record with a narrower role scope
    store.apply(consent_event(status="GIVEN", roles=["mash_team"], event_id="c"))
    assert store.lookup("child-0001", "SAFEGUARDING", "police", NOW).status is ConsentStatus.NONE
    state = store.lookup("child-0001", "SAFEGUARDING", "mash_team", NOW)
    assert state.status is ConsentStatus.GIVEN and state.record_id == "c"
    store.delete("child-0001", "SAFEGUARDING")
    assert store.lookup("child-0001", "SAFEGUARDING", "mash_team", NOW).status is ConsentStatus.NONE
    assert store.get("child-0001", "SAFEGUARDING") is None and len(store) == 0
    # the same record applied again after its delete: a state for it again, equal to the first
    store.apply(given_a)
    again = store.lookup("child-0001", "SAFEGUARDING", "police", NOW)
    assert again == first and again.status is ConsentStatus.GIVEN


def test_expiry_is_decided_at_each_lookup_not_remembered() -> None:
    store = ConsentStore()
    store.apply(consent_event(status="GIVEN", expires_at=NOW + 10, event_id="g"))
    store.apply(consent_event(status="REFUSED", purpose="EARLY_HELP", expires_at=NOW, event_id="r"))
    store.apply(consent_event(status="WITHDRAWN", purpose="HEALTH", expires_at=NOW, event_id="w"))
    statuses = {
        (purpose, now): store.lookup("child-0001", purpose, "mash_team", now).status
        for now in (NOW + 10, NOW - 1, NOW + 9, NOW + 11, NOW)  # later, then earlier again
        for purpose in ("SAFEGUARDING", "EARLY_HELP", "HEALTH")
    }
    assert statuses == {
        ("SAFEGUARDING", NOW - 1): ConsentStatus.GIVEN,
        ("SAFEGUARDING", NOW): ConsentStatus.GIVEN,
        ("SAFEGUARDING", NOW + 9): ConsentStatus.GIVEN,
        ("SAFEGUARDING", NOW + 10): ConsentStatus.EXPIRED,
        ("SAFEGUARDING", NOW + 11): ConsentStatus.EXPIRED,
        ("EARLY_HELP", NOW - 1): ConsentStatus.REFUSED,
        ("EARLY_HELP", NOW): ConsentStatus.EXPIRED,
        ("EARLY_HELP", NOW + 9): ConsentStatus.EXPIRED,
        ("EARLY_HELP", NOW + 10): ConsentStatus.EXPIRED,
        ("EARLY_HELP", NOW + 11): ConsentStatus.EXPIRED,
        **{
            ("HEALTH", now): ConsentStatus.WITHDRAWN
            for now in (NOW - 1, NOW, NOW + 9, NOW + 10, NOW + 11)
        },
    }


def test_lookups_of_one_record_share_one_state_per_status() -> None:
    # the point of the entries: no state built per call (and the states are frozen)
    store = ConsentStore(
        [ConsentRecord("r", "child-1", "SAFEGUARDING", "GIVEN", expires_at_ms=NOW)]
    )
    before = store.lookup("child-1", "SAFEGUARDING", "police", NOW - 1)
    assert before is store.lookup("child-1", "SAFEGUARDING", "mash_team", NOW - 2)
    after = store.lookup("child-1", "SAFEGUARDING", "police", NOW)
    assert after is store.lookup("child-1", "SAFEGUARDING", "police", NOW + 1)
    assert (before.status, after.status) == (ConsentStatus.GIVEN, ConsentStatus.EXPIRED)
    with pytest.raises(dataclasses.FrozenInstanceError):
        before.status = ConsentStatus.REFUSED  # type: ignore[misc]


_SUBJECTS = st.sampled_from(["child-1", "child-2"])
_PURPOSES = st.sampled_from(["SAFEGUARDING", "EARLY_HELP"])
_ROLES = st.sampled_from(["mash_team", "police", "school_dsl"])
_TIMES = st.integers(NOW - 3, NOW + 3)
_PUT = st.builds(
    lambda n, subject, purpose, status, roles, expires: (
        "put",
        ConsentRecord(f"rec-{n}", subject, purpose, status, roles, expires_at_ms=expires),
    ),
    st.integers(0, 9),
    _SUBJECTS,
    _PURPOSES,
    st.sampled_from(["GIVEN", "REFUSED", "WITHDRAWN"]),
    st.frozensets(_ROLES, max_size=2),
    st.none() | _TIMES,
)
_DELETE = st.tuples(st.just("delete"), st.tuples(_SUBJECTS, _PURPOSES))
_LOOKUP = st.tuples(st.just("lookup"), st.tuples(_SUBJECTS, _PURPOSES, _ROLES, _TIMES))


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.one_of(_PUT, _DELETE, _LOOKUP), max_size=40),
    st.permutations(range(NOW - 3, NOW + 4)),
)
def test_lookup_is_lookup_plainly_through_puts_deletes_and_time(
    ops: list[Any], times: list[int]
) -> None:
    store = ConsentStore()
    latest: dict[tuple[str, str], ConsentRecord] = {}
    grid = [
        (s, p, r)
        for s in ("child-1", "child-2")
        for p in ("SAFEGUARDING", "EARLY_HELP")
        for r in ("mash_team", "police", "school_dsl")
    ]
    for op, arg in ops:
        if op == "put":
            store.put(arg)
            latest[(arg.subject, arg.purpose)] = arg
        elif op == "delete":
            store.delete(*arg)
            latest.pop(arg, None)
        else:
            got = store.lookup(*arg)
            assert got == store.lookup_plainly(*arg)
            assert got.record is (latest.get(arg[:2]) if got.record is not None else None)
        assert len(store) == len(latest)
        assert all(store.get(*key) is record for key, record in latest.items())
        # every key and role, at times out of order: nothing remembered across a time
        for now in times:
            for subject, purpose, role in grid:
                got = store.lookup(subject, purpose, role, now)
                assert got == store.lookup_plainly(subject, purpose, role, now)
