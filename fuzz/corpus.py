"""A corpus of hostile messages for the router, built from the example events.

Each entry is ``(name, topic_agency, bytes)``: truncated, wrong magic, unknown
fingerprint, lengths that lie, huge strings and arrays, invalid UTF-8, deep
nesting attempts, wrong types, replayed event ids, spoofed agency ids,
oversized records and implausible times. Every one of them must be quarantined
(or, for a replay, recorded as a duplicate) and none may reach a feed.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from broker.codec import Codec

EVENTS = Path(__file__).resolve().parent.parent / "tests" / "data" / "events"
POLICE = "devon-cornwall-police"


def _event(name: str = "missing_episode") -> dict:
    obj = json.loads((EVENTS / f"{name}.json").read_text())
    obj["event_id"] = str(uuid.uuid4())
    return obj


def _zigzag(n: int) -> bytes:
    z = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        b = z & 0x7F
        z >>= 7
        out.append(b | (0x80 if z else 0))
        if not z:
            return bytes(out)


def hostile_corpus(codec: Codec) -> list[tuple[str, str, bytes]]:
    good = codec.encode(codec.from_json(_event()))
    header, body = good[:10], good[10:]
    fp = codec.fingerprint("safeshare.ConcernEvent")
    other_fp = codec.fingerprint("safeshare.FeedRecord")
    cases: list[tuple[str, str, bytes]] = [
        ("empty", POLICE, b""),
        ("one_byte", POLICE, b"\xc3"),
        ("header_only", POLICE, header),
        ("wrong_magic", POLICE, b"\xc3\x02" + good[2:]),
        ("json_instead_of_avro", POLICE, json.dumps(_event()).encode()),
        ("unknown_fingerprint", POLICE, b"\xc3\x01" + b"\x13" * 8 + body),
        ("another_record_type", POLICE, b"\xc3\x01" + other_fp + body),
        ("trailing_garbage", POLICE, good + b"\x00\x01\x02"),
        ("string_length_lies", POLICE, header + _zigzag(36) + b"x" * 10),
        ("string_length_huge", POLICE, header + _zigzag(2**40) + b"x"),
        ("negative_length", POLICE, header + _zigzag(-5) + b"x" * 40),
        ("array_count_huge", POLICE, b"\xc3\x01" + fp + body[:60] + _zigzag(2**31) * 4),
        ("invalid_utf8_event_id", POLICE, header + _zigzag(36) + b"\xff\xfe" * 18 + body[37:]),
        ("not_a_uuid", POLICE, header + _zigzag(36) + b"z" * 36 + body[37:]),
        ("oversized", POLICE, b"\xc3\x01" + fp + b"\x00" * 2_000_000),
        ("varint_never_ends", POLICE, header + b"\xff" * 64),
        ("deep_nesting_attempt", POLICE, header + b"\x02" * 10_000),
    ]
    for cut in (11, len(good) // 3, len(good) // 2, len(good) - 1):
        cases.append((f"truncated_at_{cut}", POLICE, good[:cut]))
    spoofed = codec.encode(codec.from_json(_event()))
    cases.append(("spoofed_agency", "example-academy", spoofed))
    bad_enum = bytearray(good)
    bad_enum[10 + 1 + 36 + 12] = 0x7F  # an enum index or union branch out of range
    cases.append(("index_out_of_range", POLICE, bytes(bad_enum)))
    # Well-formed events whose times are not plausible (broker.codec.times).
    for name, times in (
        ("reported_at_1969", {"reported_at": -1}),
        ("occurred_at_1900", {"occurred_at": "1900-01-01T00:00:00Z"}),
        ("occurred_at_9999", {"occurred_at": "9999-12-31T23:59:59Z"}),
        ("occurred_after_reported", {"occurred_at": "2024-11-10T00:00:00Z"}),
    ):
        cases.append((name, POLICE, codec.encode(codec.from_json({**_event(), **times}))))
    return cases


def replayed(codec: Codec) -> bytes:
    """A valid event, to be sent twice: the second is a duplicate."""
    return codec.encode(codec.from_json(_event()))
