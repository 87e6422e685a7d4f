"""Shared by the codec tests: the project's schemas and example events, records built
from the examples (each test file makes its own ``codec`` fixture). No tests live here."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from broker.codec import (
    Codec,
)

ROOT = Path(__file__).resolve().parent.parent
SCHEMAS = ROOT / "schemas"
EVENTS = ROOT / "tests" / "data" / "events"
EVENT_FILES = sorted(EVENTS.glob("*.json"))
RECORD_SCHEMAS = ("safeshare.ConcernEvent", "safeshare.FeedRecord", "safeshare.QuarantineRecord")


def event_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / f"{name}.json").read_text(encoding="utf-8"))
    return data


def feed_record(codec: Codec) -> dict[str, Any]:
    event = codec.from_json(event_json("return_home_interview"))
    minimised, redacted = codec.redact(event, {"concern_summary", "location", "pseudonym"})
    return {
        "decision": {
            "subscriber": "mash-torbay",
            "rule_id": "mash-missing-no-consent",
            "lawful_basis": "UK-GDPR-9(2)(g)+DPA2018-Sch1-para18",
            "policy_digest": "ab" * 32,
            "data_classes_shared": ["concern_summary", "location", "metadata", "pseudonym"],
            "fields_redacted": redacted,
            "obligations": [
                {"code": "ACKNOWLEDGE", "due_at": datetime(2024, 11, 11, 17, 2, tzinfo=UTC)},
                {"code": "RECORD_SHARE", "due_at": None},
            ],
            "decided_at": datetime(2024, 11, 10, 17, 2, 46, 120000, tzinfo=UTC),
        },
        "event": minimised,
    }


def quarantine_record() -> dict[str, Any]:
    return {
        "original": b"\xc3\x01garbage",
        "original_size": None,
        "source_topic": "safeshare.ingest.devon-cornwall-police",
        "source_partition": 3,
        "source_offset": 18_446_744,
        "reason": "UNKNOWN_SCHEMA",
        "detail": "no known schema has fingerprint 0011223344556677",
        "quarantined_at": datetime(2024, 11, 10, 17, 3, tzinfo=UTC),
    }


def plain(value: Any) -> Any:
    """The in-memory shape with union tuples unwrapped (how the avro package reads)."""
    if isinstance(value, tuple):
        return plain(value[1])
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
