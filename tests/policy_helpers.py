"""Shared fixtures for the policy tests: a hand-made field map and event builders.

The map below is written by hand from schemas/*.avsc (CONTRACTS.md, "Field
paths") so the policy tests do not depend on the codec; ``test_policy_codec``
checks the real codec's map against the example policy and example events.
No tests live here.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.policy import ConsentStore

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_POLICY = ROOT / "deploy" / "policy" / "example-mash.yaml"
TORBAY = "E06000027"
DEVON = "E10000008"
NOW = 1_767_225_600_000  # 2026-01-01T00:00:00Z

_RAW = """
category metadata
event_id metadata
occurred_at metadata
payload.ConsentRecord.expires_at consent
payload.ConsentRecord.given_by consent
payload.ConsentRecord.purpose consent
payload.ConsentRecord.recorded_at metadata
payload.ConsentRecord.recorded_by_role metadata
payload.ConsentRecord.scope_data_classes consent
payload.ConsentRecord.scope_roles consent
payload.ConsentRecord.status consent
payload.EducationConcern.attendance_percent education
payload.EducationConcern.exclusions education
payload.EducationConcern.missing_education education
payload.EducationConcern.notes free_text
payload.EducationConcern.off_rolling_suspected education
payload.EducationConcern.persistent_absence education
payload.EducationConcern.school_urn education
payload.ExploitationScreening.associates.description third_party
payload.ExploitationScreening.associates.relationship third_party
payload.ExploitationScreening.concern_types concern_summary
payload.ExploitationScreening.indicators concern_summary
payload.ExploitationScreening.locations.area location
payload.ExploitationScreening.locations.place location
payload.ExploitationScreening.locations.postcode_district location
payload.ExploitationScreening.nrm_referral concern_summary
payload.ExploitationScreening.score concern_summary
payload.ExploitationScreening.tool metadata
payload.HealthConcern.clinician_notes free_text
payload.HealthConcern.injuries health
payload.HealthConcern.presentation health
payload.HealthConcern.setting health
payload.HealthConcern.sexual_health health
payload.HealthConcern.substance_misuse health
payload.MissingEpisode.ended_at metadata
payload.MissingEpisode.episode_number_in_90_days concern_summary
payload.MissingEpisode.episode_type metadata
payload.MissingEpisode.found.area location
payload.MissingEpisode.found.place location
payload.MissingEpisode.found.postcode_district location
payload.MissingEpisode.last_seen.area location
payload.MissingEpisode.last_seen.place location
payload.MissingEpisode.last_seen.postcode_district location
payload.MissingEpisode.police_reference police
payload.MissingEpisode.police_risk_grading police
payload.MissingEpisode.reported_by_role metadata
payload.MissingEpisode.return_interview_offered concern_summary
payload.MissingEpisode.started_at metadata
payload.PatternAlert.alert_id metadata
payload.PatternAlert.children pseudonym
payload.PatternAlert.evidence metadata
payload.PatternAlert.first_at metadata
payload.PatternAlert.identity_decision metadata
payload.PatternAlert.kind metadata
payload.PatternAlert.last_at metadata
payload.PatternAlert.matched third_party
payload.PatternAlert.meets_threshold metadata
payload.PatternAlert.place.area location
payload.PatternAlert.place.place location
payload.PatternAlert.place.postcode_district location
payload.PatternAlert.threshold metadata
payload.PatternAlert.version metadata
payload.PatternAlert.window_days metadata
payload.PoliceNotification.alleged_perpetrator_relationship third_party
payload.PoliceNotification.child_present police
payload.PoliceNotification.child_witnessed police
payload.PoliceNotification.crime_reference police
payload.PoliceNotification.incident_at metadata
payload.PoliceNotification.incident_type police
payload.PoliceNotification.notify_school_before_next_day metadata
payload.ReturnHomeInterview.conducted_by_independent_person metadata
payload.ReturnHomeInterview.disclosures free_text
payload.ReturnHomeInterview.held_at metadata
payload.ReturnHomeInterview.outcome concern_summary
payload.ReturnHomeInterview.people_mentioned.description third_party
payload.ReturnHomeInterview.people_mentioned.relationship third_party
payload.ReturnHomeInterview.places_mentioned.area location
payload.ReturnHomeInterview.places_mentioned.place location
payload.ReturnHomeInterview.places_mentioned.postcode_district location
payload.ReturnHomeInterview.risk_indicators concern_summary
payload.ReturnHomeInterview.within_72_hours metadata
reported_at metadata
reporter.contact referrer
reporter.name referrer
reporter.organisation referrer
reporter.role metadata
risk_level metadata
sharing.break_glass metadata
sharing.justification concern_summary
sharing.no_consent_reason metadata
signature metadata
source.agency_id metadata
source.agency_type metadata
source.system metadata
subject.address identity
subject.date_of_birth identity
subject.family_name identity
subject.given_name identity
subject.identifier_absent_reason metadata
subject.local_authority metadata
subject.nhs_number identity
subject.postcode identity
subject.pseudonym pseudonym
subject.social_care_status social_care
subject.upn identity
summary concern_summary
"""

FIELD_CLASSES: dict[str, str] = dict(
    line.split()
    for line in _RAW.strip().splitlines()  # type: ignore[misc]
)

_T0 = datetime(2025, 12, 31, 22, 0, tzinfo=UTC)

_PAYLOADS: dict[str, tuple[str, dict[str, Any]]] = {
    "MISSING_EPISODE": (
        "safeshare.MissingEpisode",
        {
            "episode_type": "MISSING_FROM_HOME",
            "started_at": _T0,
            "ended_at": None,
            "last_seen": {
                "place": "Princess Gardens",
                "area": "Torquay",
                "postcode_district": "TQ1",
            },
            "found": None,
            "episode_number_in_90_days": 3,
            "police_reference": "DC-2025-0001",
            "police_risk_grading": "HIGH",
            "return_interview_offered": True,
            "reported_by_role": "carer",
        },
    ),
    "HEALTH_CONCERN": (
        "safeshare.HealthConcern",
        {
            "setting": "EMERGENCY_DEPARTMENT",
            "presentation": "intoxicated, late at night",
            "injuries": None,
            "sexual_health": "STI test requested",
            "substance_misuse": "alcohol",
            "clinician_notes": "Came in with an older man who left before triage.",
        },
    ),
    "RETURN_HOME_INTERVIEW": (
        "safeshare.ReturnHomeInterview",
        {
            "held_at": _T0,
            "within_72_hours": True,
            "conducted_by_independent_person": True,
            "outcome": "DISCLOSURE",
            "places_mentioned": [
                {"place": "flat above takeaway", "area": "Paignton", "postcode_district": "TQ4"}
            ],
            "people_mentioned": [
                {"relationship": "older boyfriend", "description": "drives a silver car"}
            ],
            "risk_indicators": ["GIFTS", "OLDER_ASSOCIATES"],
            "disclosures": "Was given alcohol and taken to a party.",
        },
    ),
    "DOMESTIC_ABUSE": (
        "safeshare.PoliceNotification",
        {
            "incident_type": "DOMESTIC_ABUSE",
            "incident_at": _T0,
            "child_present": True,
            "child_witnessed": True,
            "crime_reference": "DC-2025-0002",
            "alleged_perpetrator_relationship": "mother's partner",
            "notify_school_before_next_day": True,
        },
    ),
    "EDUCATION_CONCERN": (
        "safeshare.EducationConcern",
        {
            "school_urn": "136578",
            "attendance_percent": 71,
            "persistent_absence": True,
            "exclusions": 0,
            "missing_education": False,
            "off_rolling_suspected": False,
            "notes": "Collected from school by unknown adults.",
        },
    ),
    "EXPLOITATION": (
        "safeshare.ExploitationScreening",
        {
            "tool": "CSE screening",
            "score": 8,
            "concern_types": ["CSE"],
            "indicators": ["MISSING", "GIFTS"],
            "locations": [{"place": "car park", "area": "Paignton", "postcode_district": "TQ3"}],
            "associates": [{"relationship": "adult male", "description": "known as 'J'"}],
            "nrm_referral": False,
        },
    ),
}


def make_event(
    *,
    agency: str = "devon-cornwall-police",
    agency_type: str = "POLICE",
    category: str = "MISSING_EPISODE",
    risk: str = "HIGH",
    la: str = TORBAY,
    subject: str = "child-0001",
    reason: str | None = None,
    justification: str | None = None,
    break_glass: bool = False,
    event_id: str = "6b1f6c3e-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """A decoded ConcernEvent in CONTRACTS.md's in-memory shape."""
    return {
        "event_id": event_id,
        "occurred_at": _T0,
        "reported_at": _T0,
        "source": {"agency_id": agency, "agency_type": agency_type, "system": "niche"},
        "reporter": {
            "role": "officer",
            "name": "PC A. Smith",
            "organisation": "Devon and Cornwall Police",
            "contact": "a.smith@example.police.uk",
        },
        "subject": {
            "pseudonym": subject,
            "local_authority": la,
            "given_name": "Jo",
            "family_name": "Bloggs",
            "date_of_birth": None,
            "nhs_number": "9434765919",
            "upn": None,
            "address": "1 Sea View, Torquay",
            "social_care_status": "CHILD_IN_NEED",
        },
        "category": category,
        "risk_level": risk,
        "summary": "Child missing overnight; seen getting into a car.",
        "sharing": {
            "no_consent_reason": reason,
            "justification": justification,
            "break_glass": break_glass,
        },
        "payload": _PAYLOADS.get(category),
        "signature": None,
    }


def consent_event(
    *,
    status: str,
    subject: str = "child-0001",
    purpose: str = "SAFEGUARDING",
    roles: list[str] | None = None,
    data_classes: list[str] | None = None,
    expires_at: int | None = None,
    event_id: str = "c0c0c0c0-0000-4000-8000-000000000001",
) -> dict[str, Any]:
    """A decoded ConcernEvent carrying a ConsentRecord payload."""
    event = make_event(
        agency="torbay-childrens-services",
        agency_type="CHILDRENS_SOCIAL_CARE",
        category="CONSENT",
        risk="LOW",
        subject=subject,
        event_id=event_id,
    )
    event["payload"] = (
        "safeshare.ConsentRecord",
        {
            "purpose": purpose,
            "status": status,
            "scope_roles": roles,
            "scope_data_classes": data_classes,
            "given_by": "PARENT",
            "recorded_by_role": "social_worker",
            "recorded_at": _T0,
            "expires_at": expires_at,
        },
    )
    return event


# -- events and consent positions at the edges, for the fast paths' comparisons --------

JUST = "Mother's partner is the suspected exploiter; asking would alert him."
OVERRIDE = {"reason": "WOULD_PREJUDICE_PROTECTION", "justification": JUST}


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
