"""Codec: single-object encoding, fingerprints, validation, JSON conversion, bad input.

Cross-checks use the Apache ``avro`` package (the reference implementation) as
an independent second opinion on fingerprints and on the binary encoding.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import fastavro
import pytest

from broker.codec import (
    Codec,
    EncodingError,
    UnknownSchemaError,
)
from broker.codec._fingerprint import HEADER_SIZE, crc64_avro
from tests.codec_helpers import (
    EVENT_FILES,
    RECORD_SCHEMAS,
    SCHEMAS,
    event_json,
    feed_record,
    plain,
    quarantine_record,
)


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec.from_dir(SCHEMAS)


@pytest.fixture
def missing(codec: Codec) -> dict[str, Any]:
    return codec.from_json(event_json("missing_episode"))

# --------------------------------------------------------------------------------------
# Round trips


def test_examples_cover_every_payload_record(codec: Codec) -> None:
    raw = codec.raw_schemas()["safeshare.ConcernEvent"]
    payload = next(f for f in raw["fields"] if f["name"] == "payload")
    branches = {b["name"] for b in payload["type"] if isinstance(b, dict)}
    seen = {event_json(p.stem)["payload"]["type"] for p in EVENT_FILES}
    assert (
        branches
        == seen
        == {
            "MissingEpisode",
            "ReturnHomeInterview",
            "HealthConcern",
            "EducationConcern",
            "PoliceNotification",
            "ExploitationScreening",
            "ConsentRecord",
            "PatternAlert",
        }
    )


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_example_events_round_trip(codec: Codec, path: Path) -> None:
    obj = json.loads(path.read_text(encoding="utf-8"))
    record = codec.from_json(obj)
    data = codec.encode(record)
    decoded = codec.decode(data)
    assert decoded == record
    # payload is the (full name, dict) tuple of docs/CONTRACTS.md
    assert decoded["payload"][0] == "safeshare." + obj["payload"]["type"]
    assert decoded["occurred_at"].tzinfo is not None
    assert decoded["occurred_at"].utcoffset() == timedelta(0)
    # to_json is printable and converts back to the same record
    printed = codec.to_json(decoded)
    json.dumps(printed)
    assert codec.from_json(printed) == record
    assert codec.encode(codec.from_json(json.loads(json.dumps(printed)))) == data


def test_feed_and_quarantine_records_round_trip(codec: Codec) -> None:
    feed = feed_record(codec)
    assert codec.decode(codec.encode(feed, "safeshare.FeedRecord"), "safeshare.FeedRecord") == feed
    q = quarantine_record()
    out = codec.decode(codec.encode(q, "safeshare.QuarantineRecord"), "safeshare.QuarantineRecord")
    assert out == q
    printed = codec.to_json(feed, "safeshare.FeedRecord")
    assert printed["event"]["payload"]["type"] == "ReturnHomeInterview"
    assert codec.from_json(printed, "safeshare.FeedRecord") == feed


def test_short_schema_names_are_accepted(codec: Codec, missing: dict[str, Any]) -> None:
    assert codec.encode(missing, "ConcernEvent") == codec.encode(missing)
    with pytest.raises(UnknownSchemaError, match="no record schema named Nope"):
        codec.encode(missing, "Nope")


def test_encoders_accept_int_milliseconds(codec: Codec, missing: dict[str, Any]) -> None:
    as_ms = dict(missing, occurred_at=1_731_102_000_000)
    decoded = codec.decode(codec.encode(as_ms))
    assert decoded["occurred_at"] == datetime(2024, 11, 8, 21, 40, tzinfo=UTC)


def test_any_aware_timezone_encodes_the_same_instant(codec: Codec, missing: dict[str, Any]) -> None:
    plus_one = timezone(timedelta(hours=1))
    moved = dict(missing, occurred_at=missing["occurred_at"].astimezone(plus_one))
    assert codec.encode(moved) == codec.encode(missing)


def test_default_codec_uses_project_schemas() -> None:
    default = Codec.default()
    assert default is Codec.default()
    assert default.fingerprint() == Codec.from_dir(SCHEMAS).fingerprint()


# --------------------------------------------------------------------------------------
# Wire format and fingerprints


def test_single_object_header_is_exact(codec: Codec, missing: dict[str, Any]) -> None:
    data = codec.encode(missing)
    fingerprint = crc64_avro(codec.canonical_form().encode("utf-8"))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == fingerprint == codec.fingerprint()
    assert len(fingerprint) == 8
    # the body is exactly fastavro's Avro binary encoding of the record
    body = io.BytesIO()
    fastavro.schemaless_writer(
        body, fastavro.parse_schema(codec.raw_schemas()["safeshare.ConcernEvent"]), missing
    )
    assert data[HEADER_SIZE:] == body.getvalue()
    assert codec.schema_name_of(data) == "safeshare.ConcernEvent"


# Known answers from the Avro project's share/test/data/schema-tests.txt (Java-checked),
# as signed 64-bit values; the wire carries them little-endian.
AVRO_VECTORS = [
    ('"null"', 7195948357588979594),
    ('"string"', -8142146995180207161),
    ('{"name":"foo","type":"record","fields":[]}', -4824392279771201922),
    ('{"name":"x.y.z.foo","type":"enum","symbols":["A1","A2"]}', -4448647247586288245),
    (
        '{"name":"PigValue","type":"record","fields":[{"name":"value","type":'
        '["null","int","long","PigValue"]}]}',
        -1759257747318642341,
    ),
]


@pytest.mark.parametrize(("canonical", "expected"), AVRO_VECTORS)
def test_crc64_avro_known_answers(canonical: str, expected: int) -> None:
    assert crc64_avro(canonical.encode()) == (expected % 2**64).to_bytes(8, "little")


def test_canonical_form_writes_logical_types_as_their_primitive(codec: Codec) -> None:
    # Avro spec, "Parsing Canonical Form": [STRIP] drops logicalType, [PRIMITIVES]
    # then writes {"type":"long"} as "long" (Java's SchemaNormalization does so).
    pcf = codec.canonical_form()
    assert '"name":"occurred_at","type":"long"' in pcf
    assert "logicalType" not in pcf and "doc" not in pcf and "dataClass" not in pcf


def test_fingerprint_is_of_the_expanded_schema_not_fastavros_named_references(
    codec: Codec,
) -> None:
    """The docs/DESIGN.md pitfall: parsing ConcernEvent.avsc against separately registered
    named types makes fastavro's canonical form name them without defining them."""
    raws = {p.stem: json.loads(p.read_text()) for p in SCHEMAS.glob("*.avsc")}
    named: dict[str, Any] = {}
    pending = dict(raws)
    while pending:
        progressed = False
        for name, raw in list(pending.items()):
            try:
                fastavro.parse_schema(raw, named)
            except fastavro.schema.UnknownType:
                continue
            del pending[name]
            progressed = True
        assert progressed
    by_reference = fastavro.schema.to_parsing_canonical_form(
        fastavro.parse_schema(raws["ConcernEvent"], named)
    )
    assert '"type":"safeshare.Source"' in by_reference  # a name, never defined
    assert crc64_avro(by_reference.encode()) != codec.fingerprint()
    # fastavro's expand=True is not enough either (fastavro 1.13): it inlines the
    # types the top record names, but their own references (AgencyType inside
    # Source, Place inside MissingEpisode) stay bare names that are never defined.
    one_level = fastavro.schema.to_parsing_canonical_form(
        fastavro.parse_schema(raws["ConcernEvent"], named, expand=True)
    )
    assert '"type":"safeshare.AgencyType"' in one_level
    assert crc64_avro(one_level.encode()) != codec.fingerprint()
    assert '{"name":"safeshare.Source","type":"record"' in codec.canonical_form()


@pytest.fixture(scope="module")
def avro_reference() -> None:
    """The Apache ``avro`` package must be installed (test extras): a cross-check
    that silently skipped would be a test that cannot fail."""
    try:
        import avro.io  # noqa: F401
        import avro.schema  # noqa: F401
    except ImportError:
        pytest.fail("the Apache avro package is needed for the cross-checks: pip install avro")


def _without_logical_types(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_without_logical_types(s) for s in schema]
    if isinstance(schema, dict):
        return {k: _without_logical_types(v) for k, v in schema.items() if k != "logicalType"}
    return schema


@pytest.mark.parametrize("name", RECORD_SCHEMAS)
def test_fingerprint_matches_the_avro_reference_implementation(
    codec: Codec, name: str, avro_reference: None
) -> None:
    """The avro package computes the fingerprint independently.

    avro 1.12's ``canonical_form`` writes a logical-typed primitive as
    ``{"type":"long"}`` where the spec and Java write ``"long"``. Since the
    spec's [STRIP] rule removes ``logicalType`` anyway, the schema without it
    has the same canonical form by the spec, so that is what we hand it.
    """
    import avro.schema

    raw = codec.raw_schemas()[name]
    reference = avro.schema.parse(json.dumps(_without_logical_types(raw)))
    assert reference.canonical_form == codec.canonical_form(name)
    assert reference.fingerprint("CRC-64-AVRO") == codec.fingerprint(name)


@pytest.mark.parametrize("path", EVENT_FILES, ids=lambda p: p.stem)
def test_avro_reference_implementation_reads_our_bytes(
    codec: Codec, path: Path, avro_reference: None
) -> None:
    import avro.io
    import avro.schema

    record = codec.from_json(json.loads(path.read_text(encoding="utf-8")))
    data = codec.encode(record)
    schema = avro.schema.parse(json.dumps(codec.raw_schemas()["safeshare.ConcernEvent"]))
    decoder = avro.io.BinaryDecoder(io.BytesIO(data[HEADER_SIZE:]))
    assert avro.io.DatumReader(schema).read(decoder) == plain(record)


def test_we_read_bytes_the_avro_reference_implementation_writes(
    codec: Codec, avro_reference: None
) -> None:
    import avro.io
    import avro.schema

    # A MissingEpisode payload: the first record branch, so avro's branch
    # guessing (it has no tuple notation) picks the right one.
    record = codec.from_json(event_json("missing_episode"))
    schema = avro.schema.parse(json.dumps(codec.raw_schemas()["safeshare.ConcernEvent"]))
    out = io.BytesIO()
    avro.io.DatumWriter(schema).write(plain(record), avro.io.BinaryEncoder(out))
    # avro 1.12 has no single-object writer; the body is avro's, the header ours
    # (its fingerprint is checked against avro's in the test above).
    message = b"\xc3\x01" + codec.fingerprint() + out.getvalue()
    assert codec.decode(message) == record


# --------------------------------------------------------------------------------------
# Validation on encode: the path and the problem, never the value


def test_missing_required_field_names_its_path(codec: Codec, missing: dict[str, Any]) -> None:
    del missing["subject"]["local_authority"]
    with pytest.raises(EncodingError) as exc:
        codec.encode(missing)
    assert str(exc.value) == "subject.local_authority: required string missing"


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda r: r["subject"].update(nickname="Jay"), "subject.nickname: unknown field"),
        (
            lambda r: r.update(risk_level=3),
            "risk_level: expected a symbol of safeshare.RiskLevel, got int",
        ),
        (
            lambda r: r.update(category="BURGLARY"),
            "category: not a symbol of safeshare.ConcernCategory (allowed: MISSING_EPISODE, "
            "RETURN_HOME_INTERVIEW, HEALTH_CONCERN, EDUCATION_CONCERN, DOMESTIC_ABUSE, "
            "EXPLOITATION, CONSENT, PATTERN, OTHER)",
        ),
        (
            lambda r: r.update(event_id="Jamie Example 2010-03-14"),
            "event_id: not a UUID (8-4-4-4-12 hex digits)",
        ),
        (
            lambda r: r.update(occurred_at=datetime(2024, 11, 8, 21, 40)),
            "occurred_at: naive datetime; give a timezone-aware UTC time",
        ),
        (
            lambda r: r.update(reported_at="2024-11-08T22:15:12Z"),
            "reported_at: expected timestamp (aware datetime or int ms), got str",
        ),
        (
            lambda r: r["subject"].update(given_name=12345),
            "subject.given_name: expected string, got int",
        ),
        (
            lambda r: r["subject"].update(date_of_birth="2010-03-14"),
            "subject.date_of_birth: expected date (datetime.date or int days), got str",
        ),
        (
            lambda r: r["payload"][1].update(episode_number_in_90_days=2**31),
            "payload.MissingEpisode.episode_number_in_90_days: out of range for Avro int",
        ),
        (
            lambda r: r["payload"][1].update(return_interview_offered=1),
            "payload.MissingEpisode.return_interview_offered: expected boolean, got int",
        ),
        (
            lambda r: r["payload"][1].update(episode_number_in_90_days=True),
            "payload.MissingEpisode.episode_number_in_90_days: expected int, got bool",
        ),
        (
            lambda r: r["payload"][1]["last_seen"].update(place="Torquay \ud800"),
            "payload.MissingEpisode.last_seen.place: not valid Unicode (lone surrogate)",
        ),
        (
            lambda r: r["sharing"].update(break_glass=None),
            "sharing.break_glass: expected boolean, got null",
        ),
        (
            lambda r: r.update(payload=r["payload"][1]),
            "payload: expected a (record name, dict) tuple naming one of "
            "safeshare.MissingEpisode, safeshare.ReturnHomeInterview, safeshare.HealthConcern, "
            "safeshare.EducationConcern, safeshare.PoliceNotification, "
            "safeshare.ExploitationScreening, safeshare.ConsentRecord, safeshare.PatternAlert,"
            " got dict",
        ),
        (lambda r: r.update(source=None), "source: expected record safeshare.Source, got null"),
        (lambda r: r.update(signature="c2ln"), "signature: expected bytes, got str"),
    ],
)
def test_encoding_errors_name_path_and_problem(
    codec: Codec, missing: dict[str, Any], mutate: Any, message: str
) -> None:
    mutate(missing)
    with pytest.raises(EncodingError) as exc:
        codec.encode(missing)
    assert str(exc.value) == message
    for secret in ("Jamie", "12345", "BURGLARY", "Torquay", "2010-03-14", "c2ln"):
        assert secret not in str(exc.value)


def test_every_problem_is_listed(codec: Codec, missing: dict[str, Any]) -> None:
    del missing["reporter"]["role"]
    missing["risk_level"] = "SEVERE"
    missing["payload"] = ("safeshare.Burglary", {})
    with pytest.raises(EncodingError) as exc:
        codec.encode(missing)
    assert [p.split(":")[0] for p in exc.value.problems] == [
        "reporter.role",
        "risk_level",
        "payload",
    ]
    assert str(exc.value).startswith("3 problems: ")
    assert "Burglary" not in str(exc.value)


def test_encode_refuses_messages_over_the_size_limit(missing: dict[str, Any]) -> None:
    small = Codec.from_dir(SCHEMAS, max_message_bytes=4096)
    missing["summary"] = "x" * 5000
    with pytest.raises(EncodingError, match="over the limit of 4096"):
        small.encode(missing)


def test_validate_accepts_records_with_defaults_left_out(codec: Codec) -> None:
    record = codec.from_json(event_json("consent_record"))
    del record["sharing"]
    del record["signature"]
    del record["subject"]["given_name"]
    codec.validate(record)
    decoded = codec.decode(codec.encode(record))
    assert decoded["sharing"] == {
        "no_consent_reason": None,
        "justification": None,
        "break_glass": False,
    }
    assert decoded["signature"] is None


# --------------------------------------------------------------------------------------
# JSON conversion


def test_from_json_fills_defaults_and_matches_decoded_shape(codec: Codec) -> None:
    obj = event_json("consent_record")
    assert "sharing" not in obj
    record = codec.from_json(obj)
    assert record["sharing"]["break_glass"] is False
    assert record["subject"]["given_name"] is None
    assert record["payload"][1]["recorded_at"] == datetime(2024, 11, 16, 14, 0, tzinfo=UTC)
    assert record == codec.decode(codec.encode(record))


@pytest.mark.parametrize(
    "payload",
    [
        {"type": "safeshare.HealthConcern", "setting": "GP"},
        ("safeshare.HealthConcern", {"setting": "GP"}),
        ["HealthConcern", {"setting": "GP"}],
    ],
)
def test_from_json_accepts_payload_forms(codec: Codec, payload: Any) -> None:
    obj = event_json("health_concern")
    obj["payload"] = payload
    record = codec.from_json(obj)
    assert record["payload"][0] == "safeshare.HealthConcern"
    assert record["payload"][1]["setting"] == "GP"
    assert record["payload"][1]["clinician_notes"] is None


def test_from_json_times(codec: Codec) -> None:
    obj = event_json("missing_episode")
    obj["occurred_at"] = 1_731_102_000_123
    obj["reported_at"] = "2024-11-08T22:15:12.481999+00:00"
    record = codec.from_json(obj)
    assert record["occurred_at"] == datetime(2024, 11, 8, 21, 40, 0, 123000, tzinfo=UTC)
    # truncated to the millisecond, as timestamp-millis keeps it
    assert record["reported_at"] == datetime(2024, 11, 8, 22, 15, 12, 481000, tzinfo=UTC)
    assert codec.to_json(record)["reported_at"] == "2024-11-08T22:15:12.481Z"
    assert record["subject"]["date_of_birth"] == date(2010, 3, 14)


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda o: o.update(colour="red"), "colour: unknown field"),
        (
            lambda o: o["subject"].pop("local_authority"),
            "subject.local_authority: required string missing",
        ),
        (lambda o: o.pop("source"), "source: required record safeshare.Source missing"),
        (
            lambda o: o["source"].update(agency_type="PROBATION"),
            "source.agency_type: not a symbol of safeshare.AgencyType (allowed: POLICE, HEALTH, "
            "SCHOOL, CHILDRENS_SOCIAL_CARE, VOLUNTARY, LOCAL_AUTHORITY, OTHER)",
        ),
        (lambda o: o.update(event_id="12345"), "event_id: not a UUID (8-4-4-4-12 hex digits)"),
        (
            lambda o: o.update(occurred_at="2024-11-08T21:40:00"),
            "occurred_at: naive time (no offset); write it in UTC with a trailing Z",
        ),
        (
            lambda o: o.update(occurred_at="2024-11-08T22:40:00+01:00"),
            "occurred_at: time is not in UTC; convert it and write a trailing Z",
        ),
        (
            lambda o: o.update(occurred_at="last Tuesday"),
            "occurred_at: not an ISO-8601 time (e.g. 2024-05-01T21:40:00Z)",
        ),
        (
            lambda o: o.update(occurred_at=1.5),
            "occurred_at: expected an ISO-8601 UTC time or epoch milliseconds, got float",
        ),
        (
            lambda o: o["subject"].update(date_of_birth="14/03/2010"),
            "subject.date_of_birth: expected a date as YYYY-MM-DD",
        ),
        (lambda o: o.update(signature="not base64!"), "signature: not valid base64"),
        (
            lambda o: o["payload"].update(type="Burglary"),
            'payload: give the record type as "type", one of MissingEpisode, '
            "ReturnHomeInterview, HealthConcern, EducationConcern, PoliceNotification, "
            "ExploitationScreening, ConsentRecord, PatternAlert",
        ),
        (
            lambda o: o["payload"].update(police_risk_grading="SEVERE"),
            "payload.MissingEpisode.police_risk_grading: not a symbol of "
            "safeshare.PoliceRiskGrading (allowed: NO_APPARENT_RISK, LOW, MEDIUM, HIGH)",
        ),
        (
            lambda o: o["payload"]["found"].update(postcode="TQ4 5AB"),
            "payload.MissingEpisode.found.postcode: unknown field",
        ),
        (
            lambda o: o["payload"].update(episode_number_in_90_days="3"),
            "payload.MissingEpisode.episode_number_in_90_days: expected int, got str",
        ),
        (
            lambda o: o["payload"].update(last_seen=["bus station"]),
            "payload.MissingEpisode.last_seen: expected record safeshare.Place (a JSON object),"
            " got list",
        ),
        (lambda o: o.update(summary=["a"]), "summary: expected string, got list"),
        (
            lambda o: o.update(risk_level=None),
            "risk_level: expected a symbol of safeshare.RiskLevel, got null",
        ),
    ],
)
def test_from_json_errors_name_path_and_problem(codec: Codec, mutate: Any, message: str) -> None:
    obj = event_json("missing_episode")
    mutate(obj)
    with pytest.raises(EncodingError) as exc:
        codec.from_json(obj)
    assert str(exc.value) == message
    for secret in ("PROBATION", "12345", "14/03/2010", "last Tuesday", "TQ4 5AB", "Burglary"):
        assert secret not in str(exc.value)


def test_from_json_requires_an_object(codec: Codec) -> None:
    with pytest.raises(EncodingError, match=r"^\(root\): expected record safeshare.ConcernEvent"):
        codec.from_json(["not", "an", "event"])


def test_to_json_validates_first(codec: Codec, missing: dict[str, Any]) -> None:
    missing["risk_level"] = "SEVERE"
    with pytest.raises(EncodingError, match="^risk_level: not a symbol"):
        codec.to_json(missing)
