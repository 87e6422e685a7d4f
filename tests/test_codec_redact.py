"""Redaction: what a subscriber sees when it is granted some data classes."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from broker.codec import Codec, EncodingError
from broker.codec._schema import DATA_CLASSES

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
EVENT_FILES = sorted((ROOT / "tests" / "data" / "events").glob("*.json"))


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_dir(SCHEMAS)


def load(codec: Codec, stem: str) -> dict[str, Any]:
    path = ROOT / "tests" / "data" / "events" / f"{stem}.json"
    return codec.from_json(json.loads(path.read_text(encoding="utf-8")))


def values_at(record: Any, path: str) -> list[Any]:
    """Every value at a field path (docs/CONTRACTS.md): arrays fan out, a union
    branch segment selects the payload of that record type."""
    current = [record]
    for segment in path.split("."):
        following: list[Any] = []
        for value in current:
            for item in value if isinstance(value, list) else [value]:
                if isinstance(item, tuple):
                    if item[0].rsplit(".", 1)[-1] == segment:
                        following.append(item[1])
                elif isinstance(item, dict):
                    following.append(item.get(segment))
        current = following
    return current


def held_value(values: list[Any]) -> bool:
    return any(v is not None for v in values)


def test_metadata_only(codec: Codec) -> None:
    event = load(codec, "missing_episode")
    original = copy.deepcopy(event)
    out, redacted = codec.redact(event, set())
    assert event == original  # the input is untouched
    assert out["event_id"] == event["event_id"]
    assert out["subject"]["local_authority"] == "E06000027"
    assert out["subject"]["pseudonym"] is None
    assert out["subject"]["given_name"] is None
    assert out["summary"] is None
    assert out["sharing"] == {
        "no_consent_reason": "WOULD_PREJUDICE_PROTECTION",
        "justification": None,
        "break_glass": False,
    }
    name, payload = out["payload"]
    assert name == "safeshare.MissingEpisode"
    assert payload["started_at"] == event["payload"][1]["started_at"]
    assert payload["last_seen"] is None and payload["police_reference"] is None
    assert redacted == [
        "reporter.name",
        "reporter.organisation",
        "reporter.contact",
        "subject.pseudonym",
        "subject.given_name",
        "subject.family_name",
        "subject.date_of_birth",
        "subject.nhs_number",
        "subject.address",
        "subject.social_care_status",
        "summary",
        "sharing.justification",
        "payload.MissingEpisode.last_seen",  # a whole place, not each of its fields
        "payload.MissingEpisode.found",
        "payload.MissingEpisode.police_risk_grading",
        "payload.MissingEpisode.return_interview_offered",
        "payload.MissingEpisode.episode_number_in_90_days",
        "payload.MissingEpisode.police_reference",
    ]
    # the minimised copy still fits the schema (non-metadata fields are nullable)
    assert codec.decode(codec.encode(out)) == out


def test_everything_allowed_is_an_equal_deep_copy(codec: Codec) -> None:
    event = load(codec, "return_home_interview")
    out, redacted = codec.redact(event, DATA_CLASSES)
    assert out == event and redacted == []
    out["subject"]["pseudonym"] = "changed"
    out["payload"][1]["places_mentioned"][0]["place"] = "changed"
    out["payload"][1]["risk_indicators"].append("CCE")
    assert event == load(codec, "return_home_interview")


def test_nulls_are_not_reported(codec: Codec) -> None:
    event = load(codec, "consent_record")  # no reporter name, no identity fields
    _, redacted = codec.redact(event, {"consent"})
    assert "reporter.name" not in redacted and "subject.given_name" not in redacted
    assert redacted == ["subject.pseudonym", "summary"]


def test_a_function_can_decide_per_path(codec: Codec) -> None:
    event = load(codec, "return_home_interview")
    calls: list[tuple[str, str]] = []

    def allowed(path: str, label: str) -> bool:
        calls.append((path, label))
        return path != "payload.ReturnHomeInterview.people_mentioned.relationship"

    out, redacted = codec.redact(event, allowed)
    people = out["payload"][1]["people_mentioned"]
    assert [p["relationship"] for p in people] == [None, None]
    assert [p["description"] for p in people] == [
        p["description"] for p in event["payload"][1]["people_mentioned"]
    ]
    assert redacted == ["payload.ReturnHomeInterview.people_mentioned.relationship"]  # once
    assert all(label != "metadata" for _, label in calls)  # metadata is never asked about
    assert ("subject.date_of_birth", "identity") in calls


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
@pytest.mark.parametrize("granted", sorted(DATA_CLASSES - {"metadata"}))
def test_a_single_granted_class_shows_exactly_that_class(
    codec: Codec, path: Path, granted: str
) -> None:
    event = codec.from_json(json.loads(path.read_text(encoding="utf-8")))
    out, redacted = codec.redact(event, {granted})
    for leaf, label in codec.data_classes().items():
        before, after = values_at(event, leaf), values_at(out, leaf)
        if label in ("metadata", granted):
            assert after == before, leaf
        else:
            assert not held_value(after), leaf
            if held_value(before):
                # reported, at the field itself or the record or array holding it
                assert any(leaf == r or leaf.startswith(r + ".") for r in redacted), leaf
    for reported in redacted:
        assert held_value(values_at(event, reported))
        assert not held_value(values_at(out, reported))
    codec.validate(out)


def test_feed_record_paths_start_at_its_root(codec: Codec) -> None:
    event = load(codec, "health_concern")
    record = {
        "decision": {
            "subscriber": "health-sg",
            "rule_id": "r",
            "lawful_basis": "consent",
            "policy_digest": "0" * 64,
            "data_classes_shared": [],
            "fields_redacted": [],
            "obligations": [],
            "decided_at": 0,
        },
        "event": event,
    }
    out, redacted = codec.redact(record, {"health"}, "safeshare.FeedRecord")
    assert "event.payload.HealthConcern.clinician_notes" in redacted
    assert out["event"]["payload"][1]["presentation"] == event["payload"][1]["presentation"]
    assert "event.subject.nhs_number" in codec.data_classes("safeshare.FeedRecord")


def test_plans_are_reused_without_mixing_up_grants(codec: Codec) -> None:
    event = load(codec, "police_notification")
    first, _ = codec.redact(event, {"police"})
    codec.redact(event, frozenset({"third_party"}))
    again, _ = codec.redact(event, {"police"})
    assert first == again
    assert again["payload"][1]["crime_reference"] == "CR/24/118822"
    assert again["payload"][1]["alleged_perpetrator_relationship"] is None


def test_keys_outside_the_schema_are_not_copied(codec: Codec) -> None:
    event = load(codec, "education_concern")
    event["subject"]["smuggled"] = "Jamie Example"
    out, _ = codec.redact(event, DATA_CLASSES)
    assert "smuggled" not in out["subject"]


def test_a_malformed_payload_is_an_error_not_a_leak(codec: Codec) -> None:
    event = load(codec, "education_concern")
    event["payload"] = ("safeshare.Unknown", {"notes": "x"})
    with pytest.raises(EncodingError, match="^payload: expected a \\(record name, dict\\)"):
        codec.redact(event, set())
