"""Schema resolution (old writers, current reader) and the compatibility check.

Each test copies the project's schemas to a temporary directory and plants an
older writer version in ``history/`` (or changes the current schema), then
checks both what the checker says and what actually happens on decode.
"""

from __future__ import annotations

import copy
import io
import json
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import pytest
from click.testing import CliRunner

from broker.cli.schemas import schemas as schemas_cli
from broker.codec import (
    Codec,
    DecodingError,
    IncompatibleSchemaError,
    Problem,
    SchemaError,
    UnknownSchemaError,
    assert_compatible,
    check_compatibility,
)
from broker.codec._fingerprint import crc64_avro

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
EVENTS = ROOT / "tests" / "data" / "events"


@pytest.fixture
def schemas_dir(tmp_path: Path) -> Path:
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMAS, target)
    return target


def event(name: str = "missing_episode") -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def expanded(directory: Path, name: str = "safeshare.ConcernEvent") -> dict[str, Any]:
    return Codec.from_dir(directory).raw_schemas()[name]


def field_of(schema: dict[str, Any], path: str) -> dict[str, Any]:
    """The field at a dotted path of an expanded schema (payload branches by short name)."""
    node: Any = schema
    found: dict[str, Any] | None = None
    for segment in path.split("."):
        node = _record_in(node, segment)
        if node is None:
            raise KeyError(path)
        if "fields" in node and any(f["name"] == segment for f in node["fields"]):
            found = next(f for f in node["fields"] if f["name"] == segment)
            node = found["type"]
        # else: the segment named a union branch; stay on that record
    assert found is not None
    return found


def _record_in(node: Any, segment: str) -> Any:
    if isinstance(node, list):
        records = [b for b in node if isinstance(b, dict) and b.get("type") == "record"]
        named = [b for b in records if b["name"] == segment]
        return (named or records)[0] if (named or records) else None
    if isinstance(node, dict) and node.get("type") == "array":
        return _record_in(node["items"], segment)
    return node


def plant_old_version(directory: Path, old: dict[str, Any], name: str = "ConcernEvent") -> None:
    """Make ``old`` kept version 1, the kept versions one later each."""
    history = directory / "history" / name
    kept = sorted(int(p.stem) for p in history.glob("*.avsc"))
    for n in reversed(kept):
        (history / f"{n}.avsc").rename(history / f"{n + 1}.avsc")
    (history / "1.avsc").write_text(json.dumps(old, indent=2), encoding="utf-8")


def next_version(directory: Path, name: str) -> int:
    return 1 + max(int(p.stem) for p in (directory / "history" / name).glob("*.avsc"))


def write_with(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    """Single-object bytes as an old producer wrote them (fastavro directly)."""
    parsed = fastavro.parse_schema(copy.deepcopy(schema))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, parsed, record)
    pcf = fastavro.schema.to_parsing_canonical_form(parsed)
    return b"\xc3\x01" + crc64_avro(pcf.encode()) + body.getvalue()


def reasons(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


# --------------------------------------------------------------------------------------
# The project's own schemas


def test_project_schemas_are_compatible_with_their_history() -> None:
    assert check_compatibility(SCHEMAS) == []
    assert check_compatibility(Codec.from_dir(SCHEMAS)) == []
    assert_compatible(SCHEMAS)


def test_cli_check_passes_on_the_project_schemas() -> None:
    result = CliRunner().invoke(schemas_cli, ["check", "--dir", str(SCHEMAS)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("ok: ")


# --------------------------------------------------------------------------------------
# Compatible changes: old data decodes into today's shape


def test_old_writer_decodes_into_the_current_shape(schemas_dir: Path) -> None:
    old = expanded(schemas_dir)
    # v1 had no social_care_status, had a field since dropped, and an agency type
    # the current enum lacks (AgencyType has default OTHER).
    subject = field_of(old, "subject")["type"]
    subject["fields"] = [f for f in subject["fields"] if f["name"] != "social_care_status"]
    old["fields"].insert(
        1,
        {"name": "legacy_case_ref", "type": "string", "doc": "dropped", "dataClass": "metadata"},
    )
    field_of(old, "source.agency_type")["type"]["symbols"].append("PROBATION")
    plant_old_version(schemas_dir, old)

    assert check_compatibility(schemas_dir) == []

    codec = Codec.from_dir(schemas_dir)
    record = codec.from_json(event())
    old_record = copy.deepcopy(record)
    del old_record["subject"]["social_care_status"]
    old_record["legacy_case_ref"] = "CASE-1"
    old_record["source"]["agency_type"] = "PROBATION"
    data = write_with(old, old_record)

    assert data[2:10] != codec.fingerprint()
    decoded = codec.decode(data)
    expected = copy.deepcopy(record)
    expected["subject"]["social_care_status"] = None  # the reader's default
    expected["source"]["agency_type"] = "OTHER"  # the reader enum's default
    assert decoded == expected
    assert codec.schema_name_of(data) == "safeshare.ConcernEvent"
    # without the kept version the same bytes cannot be read at all
    (schemas_dir / "history" / "ConcernEvent" / "1.avsc").unlink()
    with pytest.raises(UnknownSchemaError, match="no known schema has fingerprint"):
        Codec.from_dir(schemas_dir).decode(data)


def test_promotions_are_resolved(tmp_path: Path) -> None:
    directory = tmp_path / "schemas"
    directory.mkdir()

    def thing(count: str, score: str, ref: str) -> dict[str, Any]:
        def f(name: str, t: str) -> dict[str, Any]:
            return {"name": name, "type": t, "doc": name, "dataClass": "metadata"}

        return {
            "type": "record",
            "name": "Thing",
            "namespace": "safeshare",
            "fields": [f("count", count), f("score", score), f("ref", ref)],
        }

    current = thing("long", "double", "string")
    (directory / "Thing.avsc").write_text(json.dumps(current))
    history = directory / "history" / "Thing"
    history.mkdir(parents=True)
    old = thing("int", "float", "bytes")
    (history / "1.avsc").write_text(json.dumps(old))
    (history / "2.avsc").write_text(json.dumps(current))

    assert check_compatibility(directory) == []
    codec = Codec.from_dir(directory)
    data = write_with(old, {"count": 7, "score": 0.5, "ref": b"MP/24/1"})
    assert codec.decode(data, "safeshare.Thing") == {"count": 7, "score": 0.5, "ref": "MP/24/1"}
    assert isinstance(codec.decode(data, "Thing")["score"], float)


# --------------------------------------------------------------------------------------
# Incompatible changes: the checker says why, and decoding really would fail


def test_added_field_without_default_is_refused(schemas_dir: Path) -> None:
    old = expanded(schemas_dir)
    plant_old_version(schemas_dir, old)
    path = schemas_dir / "Subject.avsc"
    subject = json.loads(path.read_text())
    subject["fields"].append(
        {"name": "ethnicity_code", "type": "string", "doc": "Ethnicity.", "dataClass": "metadata"}
    )
    path.write_text(json.dumps(subject))

    found = reasons(check_compatibility(schemas_dir))
    assert (
        "safeshare.ConcernEvent v1: subject.ethnicity_code: field added without a default" in found
    )
    assert (
        "safeshare.ConcernEvent v2: subject.ethnicity_code: field added without a default" in found
    )
    with pytest.raises(IncompatibleSchemaError, match="field added without a default"):
        assert_compatible(schemas_dir)
    # fastavro agrees: data written with v1 cannot be read with the new schema
    data = write_with(old, Codec.from_dir(SCHEMAS).from_json(event()))
    with pytest.raises(DecodingError, match="cannot be resolved|malformed"):
        Codec.from_dir(schemas_dir).decode(data)


def test_removed_default_is_refused(schemas_dir: Path) -> None:
    old = expanded(schemas_dir)
    old["fields"] = [f for f in old["fields"] if f["name"] != "sharing"]  # v1 had no sharing
    plant_old_version(schemas_dir, old)
    assert check_compatibility(schemas_dir) == []  # the current sharing has a default

    path = schemas_dir / "ConcernEvent.avsc"
    current = json.loads(path.read_text())
    for f in current["fields"]:
        if f["name"] == "sharing":
            del f["default"]
    path.write_text(json.dumps(current))
    found = reasons(check_compatibility(schemas_dir))
    assert "safeshare.ConcernEvent v1: sharing: field added without a default" in found


def test_changed_type_is_refused(schemas_dir: Path) -> None:
    plant_old_version(schemas_dir, expanded(schemas_dir))
    path = schemas_dir / "MissingEpisode.avsc"
    raw = json.loads(path.read_text())
    for f in raw["fields"]:
        if f["name"] == "episode_number_in_90_days":
            f["type"] = ["null", "string"]
    path.write_text(json.dumps(raw))
    found = reasons(check_compatibility(schemas_dir))
    assert (
        "safeshare.ConcernEvent v1: payload.MissingEpisode.episode_number_in_90_days: "
        "writer's int matches no type in the reader's union" in found
    )


def test_changed_logical_type_is_refused(schemas_dir: Path) -> None:
    plant_old_version(schemas_dir, expanded(schemas_dir))
    path = schemas_dir / "ConcernEvent.avsc"
    raw = json.loads(path.read_text())
    for f in raw["fields"]:
        if f["name"] == "occurred_at":
            f["type"] = {"type": "long", "logicalType": "timestamp-micros"}
    path.write_text(json.dumps(raw))
    found = reasons(check_compatibility(schemas_dir))
    assert (
        "safeshare.ConcernEvent v1: occurred_at: logical type changed from timestamp-millis "
        "to timestamp-micros" in found
    )


def test_removed_enum_symbol_without_default_is_refused(schemas_dir: Path) -> None:
    old = expanded(schemas_dir)
    field_of(old, "risk_level")["type"]["symbols"].insert(0, "UNKNOWN")
    plant_old_version(schemas_dir, old)
    found = reasons(check_compatibility(schemas_dir))
    assert found == [
        "safeshare.ConcernEvent v1: risk_level: symbols removed without an enum default: UNKNOWN"
    ]
    result = CliRunner().invoke(schemas_cli, ["check", "--dir", str(schemas_dir)])
    assert result.exit_code == 1
    assert "FAIL safeshare.ConcernEvent v1: risk_level: symbols removed" in result.output

    # and decoding such a message would indeed fail (fail closed, never a guess)
    record = Codec.from_dir(SCHEMAS).from_json(event())
    record["risk_level"] = "UNKNOWN"
    with pytest.raises(DecodingError, match="cannot be resolved to the reader schema"):
        Codec.from_dir(schemas_dir).decode(write_with(old, record))


def test_removed_union_branch_is_refused(schemas_dir: Path) -> None:
    plant_old_version(schemas_dir, expanded(schemas_dir))
    path = schemas_dir / "ConcernEvent.avsc"
    raw = json.loads(path.read_text())
    for f in raw["fields"]:
        if f["name"] == "payload":
            f["type"].remove("safeshare.EducationConcern")
    path.write_text(json.dumps(raw))
    found = reasons(check_compatibility(schemas_dir))
    assert (
        "safeshare.ConcernEvent v1: payload.EducationConcern: writer's record "
        "safeshare.EducationConcern matches no type in the reader's union" in found
    )


def test_unkept_current_version_is_refused(schemas_dir: Path) -> None:
    path = schemas_dir / "ConcernEvent.avsc"
    raw = json.loads(path.read_text())
    raw["fields"].append(
        {
            "name": "received_via",
            "type": ["null", "string"],
            "default": None,
            "doc": "Gateway the event came through.",
            "dataClass": "metadata",
        }
    )
    path.write_text(json.dumps(raw))
    found = check_compatibility(schemas_dir)
    assert len(found) == 2  # ConcernEvent itself, and FeedRecord which holds it
    assert {p.schema for p in found} == {"safeshare.ConcernEvent", "safeshare.FeedRecord"}
    assert all("is not kept in history" in p.reason for p in found)
    event_next = next_version(schemas_dir, "ConcernEvent")
    feed_next = next_version(schemas_dir, "FeedRecord")
    assert f"history/ConcernEvent/{event_next}.avsc" in str(found[0])

    result = CliRunner().invoke(schemas_cli, ["snapshot", "--dir", str(schemas_dir)])
    assert result.exit_code == 0, result.output
    assert (schemas_dir / "history" / "ConcernEvent" / f"{event_next}.avsc").exists()
    assert (schemas_dir / "history" / "FeedRecord" / f"{feed_next}.avsc").exists()
    assert check_compatibility(schemas_dir) == []
    result = CliRunner().invoke(schemas_cli, ["snapshot", "--dir", str(schemas_dir)])
    assert "already kept" in result.output


def test_new_field_needs_doc_and_data_class(schemas_dir: Path) -> None:
    path = schemas_dir / "Subject.avsc"
    raw = json.loads(path.read_text())
    raw["fields"].append({"name": "gender", "type": ["null", "string"], "default": None})
    raw["fields"].append(
        {
            "name": "ethnicity",
            "type": "string",
            "default": "",
            "doc": "Ethnicity.",
            "dataClass": "identity",
        }
    )
    path.write_text(json.dumps(raw))
    found = reasons(check_compatibility(schemas_dir))
    assert "safeshare.Subject: gender: field has no doc" in found
    assert "safeshare.Subject: gender: field has no dataClass" in found
    assert 'safeshare.Subject: ethnicity: identity field must be nullable: ["null", ...]' in found
    with pytest.raises(SchemaError, match="gender: field has no dataClass"):
        Codec.from_dir(schemas_dir)


def test_removed_schema_is_refused(schemas_dir: Path) -> None:
    (schemas_dir / "QuarantineRecord.avsc").unlink()
    kept = len(list((schemas_dir / "history" / "QuarantineRecord").glob("*.avsc")))
    found = reasons(check_compatibility(schemas_dir))
    assert found == [
        f"safeshare.QuarantineRecord: schema removed, but data written with {kept} kept "
        "version(s) must stay readable"
    ]


def test_unreadable_schema_directory_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    found = check_compatibility(tmp_path / "nowhere")
    assert len(found) == 1 and "schemas directory not found" in found[0].reason


def test_history_files_must_be_numbered(schemas_dir: Path) -> None:
    (schemas_dir / "history" / "ConcernEvent" / "latest.avsc").write_text("{}")
    with pytest.raises(SchemaError, match="a kept version is named <n>.avsc"):
        Codec.from_dir(schemas_dir)


def test_history_must_hold_the_schema_it_is_named_after(schemas_dir: Path) -> None:
    quarantine = expanded(schemas_dir, "safeshare.QuarantineRecord")
    (schemas_dir / "history" / "ConcernEvent" / "2.avsc").write_text(json.dumps(quarantine))
    with pytest.raises(
        SchemaError, match="defines safeshare.QuarantineRecord, expected safeshare.ConcernEvent"
    ):
        Codec.from_dir(schemas_dir)


def test_resolution_across_a_decision_timestamp(schemas_dir: Path) -> None:
    """A FeedRecord written before ``obligations`` existed reads with an empty list."""
    old = expanded(schemas_dir, "safeshare.FeedRecord")
    decision = field_of(old, "decision")["type"]
    decision["fields"] = [f for f in decision["fields"] if f["name"] != "obligations"]
    plant_old_version(schemas_dir, old, "FeedRecord")
    assert check_compatibility(schemas_dir) == []
    codec = Codec.from_dir(schemas_dir)
    record = {
        "decision": {
            "subscriber": "mash-torbay",
            "rule_id": "r1",
            "lawful_basis": "consent",
            "policy_digest": "00" * 32,
            "data_classes_shared": ["metadata"],
            "fields_redacted": [],
            "decided_at": datetime(2024, 11, 10, tzinfo=UTC),
        },
        "event": codec.redact(codec.from_json(event()), set())[0],
    }
    decoded = codec.decode(write_with(old, record), "safeshare.FeedRecord")
    assert decoded["decision"]["obligations"] == []
    assert decoded["event"] == record["event"]
