"""Policy against the real codec: its field map, the example events, the router's redaction."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli.policy import policy as policy_cli
from broker.codec import Codec
from broker.policy import (
    DATA_CLASSES,
    ConsentStatus,
    ConsentStore,
    Outcome,
    Policy,
    ReasonCode,
)
from broker.policy.vocabulary import AGENCY_TYPES, CATEGORIES, PURPOSES
from tests.policy_helpers import EXAMPLE_POLICY, FIELD_CLASSES, ROOT

EVENTS = sorted((ROOT / "tests" / "data" / "events").glob("*.json"))
NOV_2024 = 1_731_196_800_000  # 2024-11-10T00:00:00Z, after the example events


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.default()


@pytest.fixture(scope="module")
def policy() -> Policy:
    return Policy.load(EXAMPLE_POLICY)  # field classes from Codec.default()


def load_event(codec: Codec, path: Path) -> dict[str, Any]:
    return codec.from_json(json.loads(path.read_text(encoding="utf-8")))


def values_at(obj: Any, parts: list[str]) -> Iterator[Any]:
    """Every value at a CONTRACTS.md field path (union branch = a segment; arrays add none)."""
    if isinstance(obj, list):
        for item in obj:
            yield from values_at(item, parts)
        return
    if not parts:
        yield obj
        return
    if isinstance(obj, tuple):
        name, body = obj
        if name.rsplit(".", 1)[-1] == parts[0]:
            yield from values_at(body, parts[1:])
        return
    if obj is None:
        yield None
        return
    yield from values_at(obj.get(parts[0]), parts[1:])


def test_codec_field_map_is_the_one_the_tests_use(codec: Codec, policy: Policy) -> None:
    assert codec.data_classes() == FIELD_CLASSES
    assert set(codec.data_classes().values()) <= DATA_CLASSES
    assert policy.digest == Policy.load(EXAMPLE_POLICY, field_classes=FIELD_CLASSES).digest


def test_policy_vocabulary_matches_the_schema_enums() -> None:
    def symbols(name: str) -> frozenset[str]:
        raw = json.loads((ROOT / "schemas" / f"{name}.avsc").read_text(encoding="utf-8"))
        return frozenset(raw["symbols"])

    assert symbols("AgencyType") == AGENCY_TYPES
    assert symbols("ConcernCategory") == CATEGORIES
    assert symbols("ConsentPurpose") == PURPOSES
    assert symbols("RiskLevel") == {"LOW", "MEDIUM", "HIGH", "CRITICAL"}


@pytest.mark.parametrize("path", EVENTS, ids=[p.stem for p in EVENTS])
def test_router_redaction_agrees_with_each_decision(
    codec: Codec, policy: Policy, path: Path
) -> None:
    event = load_event(codec, path)
    decisions = policy.decide_all(event, ConsentStore(), NOV_2024)
    assert [d.subscriber for d in decisions] == [s.id for s in policy.subscribers]
    assert not {d.reason_code for d in decisions} & {
        ReasonCode.UNKNOWN_AGENCY,
        ReasonCode.MALFORMED_EVENT,
    }
    for d in decisions:
        if d.outcome is not Outcome.SHARE:
            continue
        copy, _ = codec.redact(event, set(d.data_classes_shared))
        codec.validate(copy)  # a redacted copy still fits the schema
        for field in d.fields_shared:
            assert any(v is not None for v in values_at(copy, field.split("."))), (d, field)
        for field in d.fields_redacted:
            assert all(v is None for v in values_at(copy, field.split("."))), (d, field)


def test_example_events_reach_the_right_people(codec: Codec, policy: Policy) -> None:
    missing = load_event(codec, ROOT / "tests/data/events/missing_episode.json")
    d = {x.subscriber: x for x in policy.decide_all(missing, ConsentStore(), NOV_2024)}
    assert d["torbay-mash"].outcome is Outcome.SHARE
    assert "payload.MissingEpisode.found.place" in d["dc-police-exploitation"].fields_shared
    assert "payload.MissingEpisode.found.place" in d["example-academy-dsl"].fields_redacted
    assert d["newton-abbot-college-dsl"].reason_code is ReasonCode.OUT_OF_AREA
    health = load_event(codec, ROOT / "tests/data/events/health_concern.json")
    d = {x.subscriber: x for x in policy.decide_all(health, ConsentStore(), NOV_2024)}
    assert d["example-academy-dsl"].reason_code is ReasonCode.RULE_WITHHOLD


def test_example_consent_record_feeds_the_store(codec: Codec) -> None:
    store = ConsentStore()
    store.apply(load_event(codec, ROOT / "tests/data/events/consent_record.json"))
    subject, purpose = "psn-4H8M-21PL", "RETURN_HOME_SUPPORT"
    given = store.lookup(subject, purpose, "school_dsl", NOV_2024)
    assert given.status is ConsentStatus.GIVEN
    assert given.data_classes == {"concern_summary", "location"}
    assert store.lookup(subject, purpose, "mash_team", NOV_2024).status is ConsentStatus.NONE
    later = 1_763_337_600_000  # 2025-11-17, after its expiry
    assert store.lookup(subject, purpose, "school_dsl", later).status is ConsentStatus.EXPIRED


def test_cli_check_uses_the_codec() -> None:
    result = CliRunner().invoke(policy_cli, ["check", str(EXAMPLE_POLICY)])
    assert result.exit_code == 0, result.output
    assert "11 subscribers" in result.stdout


def test_cli_explain_prints_the_decision_in_words(tmp_path: Path) -> None:
    events = ROOT / "tests" / "data" / "events"
    result = CliRunner().invoke(
        policy_cli,
        [
            "explain",
            "--event",
            str(events / "missing_episode.json"),
            "--subscriber",
            "example-academy-dsl",
            "--policy",
            str(EXAMPLE_POLICY),
            "--now",
            "2024-11-09T08:00:00Z",
        ],
    )
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("Decision: SHARE")
    assert "school-told-of-missing-or-abuse" in out
    assert "Sch 1 para 18" in out  # lawful basis for a school, without consent
    assert "would prejudice the child's protection" in out
    assert "payload.MissingEpisode.found.place" in out and "narrows this share" in out
    assert "Decided at: 2024-11-09 08:00:00 UTC" in out

    # a consent record given for this child, purpose and role: now the basis is consent
    consent = json.loads((events / "consent_record.json").read_text(encoding="utf-8"))
    consent["subject"]["pseudonym"] = "psn-7Q2K-93XD"
    consent["payload"]["purpose"] = "SAFEGUARDING"
    cf = tmp_path / "consent.json"
    cf.write_text(json.dumps(consent), encoding="utf-8")
    result = CliRunner().invoke(
        policy_cli,
        [
            "explain",
            "--event",
            str(events / "missing_episode.json"),
            "--subscriber",
            "example-academy-dsl",
            "--policy",
            str(EXAMPLE_POLICY),
            "--consent",
            str(cf),
            "--now",
            "2024-11-17T08:00:00Z",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "Consent relied on: record 27c5d8e3-9f4a-4b16-a0d2-8e6f1b3c5a94" in result.stdout
    assert "the consent covers only" in result.stdout


def test_cli_explain_refuses_a_broken_policy(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE_POLICY.read_text().replace("mash_team:", "mash_teem:", 1))
    result = CliRunner().invoke(
        policy_cli,
        [
            "explain",
            "--event",
            str(ROOT / "tests/data/events/missing_episode.json"),
            "--subscriber",
            "torbay-mash",
            "--policy",
            str(bad),
        ],
    )
    assert result.exit_code != 0
    assert "unknown role 'mash_team'" in result.output
