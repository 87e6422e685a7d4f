"""The schema files themselves: labels, docs, nullability, contract paths, loader rules.

The first tests read the ``.avsc`` files as plain JSON, independently of the
codec's own checks, so a bug in those checks cannot hide a bad schema.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from broker.cli.schemas import schemas as schemas_cli
from broker.codec import Codec, SchemaError
from broker.codec._schema import DATA_CLASSES

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
FILES = sorted(SCHEMAS.glob("*.avsc"))


def raw(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def fields(schema: Any, owner: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """(record.field, field) for every field defined anywhere in a raw schema."""
    if isinstance(schema, list):
        for branch in schema:
            yield from fields(branch, owner)
    elif isinstance(schema, dict):
        if schema.get("type") == "record":
            for f in schema["fields"]:
                yield f"{schema['name']}.{f['name']}", f
                yield from fields(f["type"], schema["name"])
        elif schema.get("type") == "array":
            yield from fields(schema["items"], owner)


def all_fields() -> list[tuple[str, dict[str, Any]]]:
    return [item for path in FILES for item in fields(raw(path))]


def contract_vocabulary() -> set[str]:
    text = (ROOT / "docs" / "CONTRACTS.md").read_text(encoding="utf-8")
    section = text.split("## Data classes", 1)[1].split("##", 1)[0]
    return set(re.findall(r"^\| (\w+) \|", section, flags=re.MULTILINE)) - {"label"}


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_dir(SCHEMAS)


# --------------------------------------------------------------------------------------
# Every field: doc, data class, nullability


def test_vocabulary_is_the_one_in_contracts() -> None:
    assert contract_vocabulary() == DATA_CLASSES


@pytest.mark.parametrize("name", [n for n, _ in all_fields()])
def test_every_field_has_a_doc_and_a_data_class(name: str) -> None:
    f = dict(all_fields())[name]
    assert isinstance(f.get("doc"), str) and f["doc"].strip(), f"{name}: no doc"
    assert f.get("dataClass") in DATA_CLASSES, f"{name}: dataClass {f.get('dataClass')!r}"


def test_every_non_metadata_field_is_nullable_with_default_null() -> None:
    for name, f in all_fields():
        if f["dataClass"] != "metadata":
            assert isinstance(f["type"], list) and f["type"][0] == "null", name
            assert "default" in f and f["default"] is None, name


def test_every_named_type_is_in_the_safeshare_namespace() -> None:
    for path in FILES:
        schema = raw(path)
        assert schema["namespace"] == "safeshare", path.name
        assert schema["name"] == path.stem
        assert schema.get("doc"), f"{path.name}: type has no doc"


def test_times_are_utc_timestamp_millis() -> None:
    for name, f in all_fields():
        t = f["type"]
        inner = [b for b in t if b != "null"][0] if isinstance(t, list) else t
        if name.endswith("_at") or name.endswith(".incident_at"):
            assert inner == {"type": "long", "logicalType": "timestamp-millis"}, name


def test_data_class_labels_that_the_brief_fixes() -> None:
    labels = {name: f["dataClass"] for name, f in all_fields()}
    assert labels["Reporter.role"] == "metadata"
    for f in ("name", "organisation", "contact"):
        assert labels[f"Reporter.{f}"] == "referrer"
    assert labels["Subject.pseudonym"] == "pseudonym"
    assert labels["Subject.local_authority"] == "metadata"
    for f in ("given_name", "family_name", "date_of_birth", "nhs_number", "upn", "address"):
        assert labels[f"Subject.{f}"] == "identity"
    assert labels["ConcernEvent.risk_level"] == "metadata"
    assert labels["ConcernEvent.summary"] == "concern_summary"
    assert labels["Sharing.no_consent_reason"] == "metadata"
    assert labels["Sharing.break_glass"] == "metadata"
    assert labels["Sharing.justification"] == "concern_summary"
    assert labels["ConcernEvent.signature"] == "metadata"
    assert labels["MissingEpisode.last_seen"] == labels["Place.place"] == "location"
    assert labels["MissingEpisode.police_risk_grading"] == "police"
    assert labels["ReturnHomeInterview.people_mentioned"] == "third_party"
    assert labels["ReturnHomeInterview.disclosures"] == "free_text"
    assert labels["HealthConcern.presentation"] == "health"
    assert labels["HealthConcern.clinician_notes"] == "free_text"
    assert labels["EducationConcern.notes"] == "free_text"
    assert labels["PoliceNotification.crime_reference"] == "police"
    assert labels["PoliceNotification.alleged_perpetrator_relationship"] == "third_party"
    assert labels["ExploitationScreening.associates"] == "third_party"
    assert labels["ExploitationScreening.locations"] == "location"


def test_enums_that_other_packages_rely_on() -> None:
    def symbols(name: str) -> list[str]:
        result: list[str] = raw(SCHEMAS / f"{name}.avsc")["symbols"]
        return result

    assert symbols("RiskLevel") == ["LOW", "MEDIUM", "HIGH", "CRITICAL"]  # ordered
    assert symbols("NoConsentReason") == [
        "CANNOT_BE_GIVEN",
        "CANNOT_REASONABLY_BE_OBTAINED",
        "WOULD_PREJUDICE_PROTECTION",
    ]
    assert symbols("AgencyType") == [
        "POLICE",
        "HEALTH",
        "SCHOOL",
        "CHILDRENS_SOCIAL_CARE",
        "VOLUNTARY",
        "LOCAL_AUTHORITY",
        "OTHER",
    ]
    assert symbols("QuarantineReason") == [
        "UNDECODABLE",
        "UNKNOWN_SCHEMA",
        "SCHEMA_INVALID",
        "AGENCY_MISMATCH",
        "OVERSIZED",
        "BAD_SIGNATURE",
        "DUPLICATE",
        "NOT_ENTITLED",
        "OTHER",
    ]
    assert symbols("ConsentPurpose") == [
        "SAFEGUARDING",
        "EARLY_HELP",
        "RETURN_HOME_SUPPORT",
        "HEALTH_CARE",
        "EDUCATION_SUPPORT",
    ]
    assert symbols("ConsentStatus") == ["GIVEN", "REFUSED", "WITHDRAWN"]
    # a reader that meets an unknown risk level must fail, never guess a lower one
    assert "default" not in raw(SCHEMAS / "RiskLevel.avsc")


# --------------------------------------------------------------------------------------
# Field paths (docs/CONTRACTS.md)


def test_contract_paths(codec: Codec) -> None:
    classes = codec.data_classes()
    assert classes["subject.date_of_birth"] == "identity"
    assert classes["payload.MissingEpisode.last_seen.place"] == "location"
    assert classes["payload.ReturnHomeInterview.people_mentioned.relationship"] == "third_party"
    assert classes["payload.ReturnHomeInterview.risk_indicators"] == "concern_summary"
    assert classes["sharing.no_consent_reason"] == "metadata"
    assert classes["event_id"] == "metadata"
    # leaves only: records, arrays of records and the payload union are not listed
    for container in (
        "subject",
        "payload",
        "payload.MissingEpisode",
        "sharing",
        "payload.ReturnHomeInterview.people_mentioned",
    ):
        assert container not in classes
    assert set(classes.values()) <= DATA_CLASSES
    classes["subject.date_of_birth"] = "metadata"  # a copy: the codec is unaffected
    assert codec.data_classes()["subject.date_of_birth"] == "identity"


def test_feed_record_paths(codec: Codec) -> None:
    feed = codec.data_classes("safeshare.FeedRecord")
    assert feed["decision.obligations.code"] == "metadata"
    assert feed["event.payload.MissingEpisode.found.area"] == "location"


# --------------------------------------------------------------------------------------
# The loader refuses broken schema directories


@pytest.fixture
def schemas_dir(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


def edit(path: Path, change: Any) -> None:
    data = raw(path)
    change(data)
    path.write_text(json.dumps(data), encoding="utf-8")


def field_named(schema: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in schema["fields"] if f["name"] == name)
    return found


@pytest.mark.parametrize(
    ("file", "change", "message"),
    [
        (
            "Subject.avsc",
            lambda s: field_named(s, "nhs_number").pop("dataClass"),
            "safeshare.Subject.nhs_number: field has no dataClass",
        ),
        (
            "Subject.avsc",
            lambda s: field_named(s, "nhs_number").update(doc=" "),
            "safeshare.Subject.nhs_number: field has no doc",
        ),
        (
            "Subject.avsc",
            lambda s: field_named(s, "nhs_number").update(dataClass="medical"),
            "safeshare.Subject.nhs_number: dataClass 'medical' is not in the vocabulary",
        ),
        (
            "Subject.avsc",
            lambda s: field_named(s, "nhs_number").update(type="string", default=""),
            'safeshare.Subject.nhs_number: identity field must be nullable: ["null", ...]',
        ),
        (
            "Subject.avsc",
            lambda s: field_named(s, "nhs_number").update(type=["null", "string"], default="?"),
            "identity field must have default null",
        ),
        (
            "Place.avsc",
            lambda s: field_named(s, "area").update(dataClass="police"),
            "safeshare.Place.area: dataClass police inside a field of class location",
        ),
        (
            "ReturnHomeInterview.avsc",
            lambda s: field_named(s, "risk_indicators").update(
                type=["null", {"type": "array", "items": "null"}]
            ),
            "items can encode to zero bytes",
        ),
        (
            "Place.avsc",
            lambda s: s["fields"].append(
                {
                    "name": "near",
                    "type": ["null", "safeshare.Place"],
                    "default": None,
                    "doc": "A place nearby.",
                    "dataClass": "location",
                }
            ),
            "safeshare.Place is recursive",
        ),
        (
            "Subject.avsc",
            lambda s: field_named(s, "social_care_status").update(
                type=["null", "safeshare.CareStatus"]
            ),
            "unknown type safeshare.CareStatus",
        ),
    ],
)
def test_broken_schemas_are_refused(
    schemas_dir: Path, file: str, change: Any, message: str
) -> None:
    edit(schemas_dir / file, change)
    with pytest.raises(SchemaError, match=re.escape(message)):
        Codec.from_dir(schemas_dir)


def test_types_live_in_the_safeshare_namespace(schemas_dir: Path) -> None:
    stray = {
        "type": "record",
        "name": "Stray",
        "namespace": "elsewhere",
        "doc": "Not ours.",
        "fields": [{"name": "x", "type": "int", "doc": "x", "dataClass": "metadata"}],
    }
    (schemas_dir / "Stray.avsc").write_text(json.dumps(stray))
    with pytest.raises(SchemaError, match="elsewhere.Stray: not in namespace safeshare"):
        Codec.from_dir(schemas_dir)


def test_file_must_be_named_after_its_type(schemas_dir: Path) -> None:
    (schemas_dir / "Place.avsc").rename(schemas_dir / "Location.avsc")
    with pytest.raises(
        SchemaError, match="Location.avsc: defines safeshare.Place; name the file Place.avsc"
    ):
        Codec.from_dir(schemas_dir)


def test_a_type_is_defined_once(schemas_dir: Path) -> None:
    place = raw(schemas_dir / "Place.avsc")
    edit(
        schemas_dir / "Person.avsc",
        lambda s: field_named(s, "description").update(type=["null", place]),
    )
    with pytest.raises(SchemaError, match="safeshare.Place is already defined in"):
        Codec.from_dir(schemas_dir)


def test_invalid_json_is_refused(schemas_dir: Path) -> None:
    (schemas_dir / "Place.avsc").write_text("{not json")
    with pytest.raises(SchemaError, match="Place.avsc: cannot read schema"):
        Codec.from_dir(schemas_dir)


def test_short_names_and_inline_types_resolve_across_files(schemas_dir: Path) -> None:
    """References may use the short name within the namespace, and a type defined
    inline in one file may be used from another; the fingerprint is unchanged."""
    before = Codec.from_dir(SCHEMAS)

    def short(s: dict[str, Any]) -> None:
        field_named(s, "last_seen")["type"] = ["null", "Place"]
        field_named(s, "found")["type"] = ["null", "Place"]

    edit(schemas_dir / "MissingEpisode.avsc", short)
    # move EpisodeType inline into MissingEpisode.avsc
    episode_type = raw(schemas_dir / "EpisodeType.avsc")
    (schemas_dir / "EpisodeType.avsc").unlink()
    edit(
        schemas_dir / "MissingEpisode.avsc",
        lambda s: field_named(s, "episode_type").update(type=["null", episode_type]),
    )
    after = Codec.from_dir(schemas_dir)
    assert after.fingerprint() == before.fingerprint()
    assert (
        after.raw_schemas()["safeshare.ConcernEvent"]
        == before.raw_schemas()["safeshare.ConcernEvent"]
    )


def test_expanded_schema_defines_each_named_type_once_at_first_use(codec: Codec) -> None:
    pcf = codec.canonical_form()
    assert pcf.count('{"name":"safeshare.Place","type":"record"') == 1
    first = pcf.index('{"name":"safeshare.Place"')
    later = pcf.index('"name":"found","type":["null","safeshare.Place"]')
    assert first < later


# --------------------------------------------------------------------------------------
# CLI


def test_cli_fingerprints(codec: Codec) -> None:
    result = CliRunner().invoke(schemas_cli, ["fingerprints", "--dir", str(SCHEMAS)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert f"{codec.fingerprint().hex()}  safeshare.ConcernEvent" in lines
    assert len(lines) == len(codec.names())
    result = CliRunner().invoke(schemas_cli, ["fingerprints", "--all", "--dir", str(SCHEMAS)])
    assert f"{codec.fingerprint().hex()}  safeshare.ConcernEvent  (kept v5)" in result.output


def test_cli_reports_a_broken_directory(schemas_dir: Path) -> None:
    edit(schemas_dir / "Subject.avsc", lambda s: field_named(s, "upn").pop("doc"))
    result = CliRunner().invoke(schemas_cli, ["check", "--dir", str(schemas_dir)])
    assert result.exit_code == 1
    assert "FAIL safeshare.Subject: upn: field has no doc" in result.output
    result = CliRunner().invoke(schemas_cli, ["fingerprints", "--dir", str(schemas_dir)])
    assert result.exit_code == 1 and "upn: field has no doc" in result.output
