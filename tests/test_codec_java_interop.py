"""Apache Avro's Java reference implementation reads every record type we put on Kafka.

An outside checker will read our topics with Avro Java, so every wire record type is
produced here by the project's own code paths — the router's core (spliced, redacted
FeedRecords; sealed EncryptedFeedRecords; clock starts from the templated writer;
access notices; identity reviews and notices; quarantine records), the loop's core
(clock changelog, status and escalation notices), a signed event (sign_message), and
the records the APIs write (Acknowledgement, IdentityDecision) — and handed, as
single-object messages, to Avro Java's ``BinaryMessageDecoder``
(``tests/data/avro/java/AvroJavaCheck.java``, run by ``tests/avro_java.py``).

For each message Java must accept it, find the writer schema by our fingerprint and
compute the same ``parsingFingerprint64``, write exactly our bytes again, and read the
same values. Values are compared in the Avro specification's JSON encoding, which
both sides can write: Java's ``JsonEncoder`` of what it decoded, fastavro's
``json_writer`` of what our codec decodes. That form names each union branch taken
(``{"safeshare.Place": {...}}``), writes bytes as ISO-8859-1 text, enums as their
symbol, and logical types as their underlying type (``timestamp-millis`` the long of
milliseconds, ``date`` the int of days: Java's GenericData without conversions gives
exactly those; ours are datetimes and dates that fastavro turns back), so no branch,
byte or time can differ unnoticed. And Java's own parser reads ``schemas/*.avsc`` (and
the kept versions) to the codec's fingerprints, since an outside reader starts from
the files, not from our expansion of them.

Marked ``jvm`` (a Maven fetch on the first run, then a JVM): ``make test`` runs it,
``make check`` does not. It never skips: a missing ``mvn``, ``java`` or ``javac`` fails
it in one line.
"""

from __future__ import annotations

import io
import json
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import fastavro
import pytest

from broker import config
from broker.clock import FixedClock
from broker.codec import UnknownSchemaError
from broker.loop.core import LoopCore, Source
from broker.routing.app import build_core
from broker.routing.core import Inbound, RoutingCore
from broker.signing import AgencySigner, sign_message
from broker.signing.feedkeys import FeedKeyring
from broker.signing.feeds import X25519, feed_schema, is_sealed
from tests.avro_java import AvroJavaError, decode_with_java, read_schema_files
from tests.feed_helpers import MASH, confidential_policy
from tests.helpers import CODEC, EVENTS, ROOT, example

pytestmark = pytest.mark.jvm

NOW = 1_795_000_000_000
EXAMPLES = sorted(p.stem for p in EVENTS.glob("*.json"))
CONSENT_EXAMPLES = {"consent_record"}

#: Every record type that goes on the wire, and so must be checked.
WIRE_RECORDS = {
    "safeshare.ConcernEvent",
    "safeshare.FeedRecord",
    "safeshare.EncryptedFeedRecord",
    "safeshare.ClockRecord",
    "safeshare.Notice",
    "safeshare.Acknowledgement",
    "safeshare.QuarantineRecord",
    "safeshare.IdentityDecision",
    "safeshare.IdentityReview",
    "safeshare.IdentityNotice",
}


class Message(NamedTuple):
    label: str  # unique: what it is and where it was written
    schema: str  # the record type its topic carries
    data: bytes


def _core(home: Path, ring: FeedKeyring) -> RoutingCore:
    """The router's core as ``safeshare route`` builds it, the MASH's feed confidential."""
    policy = confidential_policy(ring)
    settings = replace(config.load(), home=home)
    return build_core(settings, clock=FixedClock(NOW), codec=CODEC, policy=policy)


def _kind(core: RoutingCore, topic: str, data: bytes) -> str | None:
    """The record type of a router output by its topic (None: not Avro)."""
    t = core.topics
    if topic.startswith(t.feed_prefix):
        # A feed carries copies, identity notices and sealed records of either: its
        # readers tell them apart by fingerprint, as broker.api.FeedReader does.
        return "safeshare.EncryptedFeedRecord" if is_sealed(CODEC, data) else feed_schema(
            CODEC, data
        )
    if topic == t.identity:
        return None  # the identity index: sealed JSON (broker/identity/store.py)
    return {
        t.quarantine: "safeshare.QuarantineRecord",
        t.clock_starts: "safeshare.ClockRecord",
    }.get(topic) or (
        "safeshare.Notice" if topic.startswith(t.notices_prefix)
        else "safeshare.IdentityReview" if topic.startswith(t.identity_reviews_prefix)
        else "unknown topic " + topic
    )  # fmt: skip


class _Messages(list[Message]):
    """Messages, each label made unique by its position."""

    def append(self, m: Message) -> None:
        super().append(m._replace(label=f"{len(self)} {m.label}"))


def _produce(home: Path) -> list[Message]:
    """Every message the router and the loop write for the example events, the
    identity desk's decision and its notices, an acknowledgement and a signed event."""
    ring = FeedKeyring(MASH)
    ring.new_key(X25519)
    opener = ring.opener()
    core = _core(home, ring)
    out = _Messages()

    def route(label: str, msg: Inbound) -> None:
        routed = core.handle(msg)
        for i, o in enumerate(routed.outputs):
            kind = _kind(core, o.topic, o.value)
            if kind is None:
                continue
            out.append(Message(f"{label}/{i}:{o.topic}", kind, o.value))
            if kind == "safeshare.EncryptedFeedRecord":  # the exact bytes it sealed
                _, _, inner = opener.open_typed(CODEC, o.value)
                plain = opener.open(CODEC.decode(o.value, "safeshare.EncryptedFeedRecord"))
                out.append(Message(f"{label}/{i}:sealed", inner, plain))

    offset = 0
    for name in EXAMPLES:
        event = CODEC.from_json(example(name))
        data = CODEC.encode(event)
        out.append(Message(f"event {name}", "safeshare.ConcernEvent", data))
        agency = event["source"]["agency_id"]
        topic = (core.topics.consent(agency) if name in CONSENT_EXAMPLES
                 else core.topics.ingest(agency))  # fmt: skip
        offset += 1
        route(f"route {name}", Inbound(topic, 0, offset, None, data))
    # Two events the router names (no pseudonym): a close match raises a review item.
    for label, name, subject in (
        ("police", "missing_episode", {"given_name": "James", "nhs_number": "9434765919",
                                       "date_of_birth": "2010-03-14", "postcode": "TQ1 1AA"}),
        ("return home", "return_home_interview", {"given_name": "Jim",
                                                  "date_of_birth": "2010-03-15"}),
    ):  # fmt: skip
        e = example(name)
        e["subject"] = {"pseudonym": None, "local_authority": "E06000027",
                        "social_care_status": "LOOKED_AFTER", "family_name": "Exmaple"
                        if label == "return home" else "Example", **subject}  # fmt: skip
        e["sharing"] = example("missing_episode")["sharing"]  # shared without consent
        offset += 1
        route(f"named {label}", Inbound(core.topics.ingest(e["source"]["agency_id"]), 0, offset,
                                        None, CODEC.encode(CODEC.from_json(e))))  # fmt: skip

    signer = AgencySigner.generate("devon-cornwall-police")
    unsigned = CODEC.encode({**CODEC.from_json(example("missing_episode")), "signature": None})
    out.append(Message("signed event", "safeshare.ConcernEvent", sign_message(unsigned, signer)))
    offset += 1
    route("garbage", Inbound(core.topics.ingest("devon-cornwall-police"), 0, offset, None,
                             b"\xc3\x01not an event at all"))  # fmt: skip

    # broker/identity/desk.py's decision on the review item, then the router applying it.
    reviews = [m for m in out if m.schema == "safeshare.IdentityReview"]
    assert reviews, "the return-home event raised no identity review"
    item = CODEC.decode(reviews[0].data, "safeshare.IdentityReview")
    decision = {
        "decision_id": "0b6f8f56-0e0e-4f52-9d0c-2a3f5c7e9a11", "subscriber_id": MASH,
        "action": "LINK", "pseudonym": item["candidate"],
        "other_pseudonym": item["provisional"], "decided_by": "mash.practitioner",
        "review_id": item["review_id"], "decided_at": NOW - 1000,
    }  # fmt: skip
    data = CODEC.encode(decision, "safeshare.IdentityDecision")
    out.append(Message("identity decision", "safeshare.IdentityDecision", data))
    offset += 1
    route("apply decision", Inbound(core.topics.identity_decisions(MASH), 0, offset, None, data))

    # The loop: a clock start the router wrote, met by an acknowledgement
    # (broker/loop/api.py's record), another left to escalate.
    loop = LoopCore(codec=CODEC, topics=core.topics, policy=core.decider.clocks,  # type: ignore[attr-defined]
                    clock=FixedClock(NOW))  # fmt: skip
    starts = [m for m in out if m.schema == "safeshare.ClockRecord"]
    assert len(starts) >= 2, "the example events start fewer than two clocks"
    for n, start in enumerate(starts):
        for o in loop.on_start(Source(core.topics.clock_starts, 0, n), start.data):
            out.append(Message(f"loop start {n}:{o.topic}", "safeshare.ClockRecord", o.value))
    first = CODEC.decode(starts[0].data, "safeshare.ClockRecord")
    ack = {
        "ack_id": "5d7a1c2e-8b4f-4e3a-9c6d-1f2e3a4b5c6d", "event_id": first["event_id"],
        "subscriber": first["owner"], "actor": "mash.practitioner", "kind": "TRIAGE",
        "rag": "RED", "outcome": "STRATEGY_DISCUSSION", "note": "seen £ – ü",
        "acknowledged_at": NOW + 1000,
    }  # fmt: skip
    data = CODEC.encode(ack, "safeshare.Acknowledgement")
    out.append(Message("acknowledgement", "safeshare.Acknowledgement", data))
    for o in loop.on_ack(Source(core.topics.acks(first["owner"]), 0, 1), data):
        kind = "safeshare.ClockRecord" if o.topic == core.topics.clocks else "safeshare.Notice"
        out.append(Message(f"loop ack:{o.topic}", kind, o.value))
    for partition, esc in loop.tick(NOW + 400 * 24 * 3_600_000):
        for o in loop.escalation_records(partition, esc):
            kind = "safeshare.ClockRecord" if o.topic == core.topics.clocks else "safeshare.Notice"
            out.append(Message(f"loop tick:{o.topic}", kind, o.value))
    return out


@pytest.fixture(scope="module")
def messages(tmp_path_factory: pytest.TempPathFactory) -> list[Message]:
    return _produce(tmp_path_factory.mktemp("router-home"))


def _java(tmp_path: Path, messages: list[Message]) -> dict[str, dict[str, Any]]:
    schemas = CODEC.raw_schemas().values()
    try:
        return decode_with_java(config.load().home, tmp_path, schemas, messages)
    except AvroJavaError as exc:
        pytest.fail(f"Avro Java cross-check: {exc}", pytrace=False)


def ours(message: Message) -> Any:
    """Our reading of ``message`` in the Avro JSON encoding (fastavro's json_writer)."""
    record = CODEC.decode(message.data, message.schema)
    buf = io.StringIO()
    parsed = fastavro.parse_schema(CODEC.raw_schemas()[message.schema])
    fastavro.json_writer(buf, parsed, [record])
    return json.loads(buf.getvalue())


def test_avro_java_reads_every_message_of_every_wire_record_type(
    messages: list[Message], tmp_path: Path
) -> None:
    assert {m.schema for m in messages} == WIRE_RECORDS
    read = _java(tmp_path, messages)
    assert set(read) == {m.label for m in messages}, "Java did not answer every message"
    problems = []
    for m in messages:
        got = read[m.label]
        if not got["ok"]:
            problems.append(f"{m.label}: Java refused it: {got['error']}")
            continue
        if got["schema"] != m.schema:
            problems.append(f"{m.label}: Java found writer schema {got['schema']}")
        if got["fingerprint"] != CODEC.fingerprint(m.schema).hex() or got["fingerprint"] != (
            m.data[2:10].hex()
        ):
            problems.append(f"{m.label}: Java's fingerprint {got['fingerprint']}, the header's"
                            f" {m.data[2:10].hex()}, ours {CODEC.fingerprint(m.schema).hex()}")
        if not got["reencoded_equal"]:
            problems.append(f"{m.label}: Java writes the record it read as other bytes")
        if got["record"] != ours(m):
            problems.append(f"{m.label}: Java read {got['record']}\n  we read {ours(m)}")
    assert not problems, f"{len(problems)} of {len(messages)} messages:\n" + "\n".join(problems)


def test_a_fingerprint_not_in_the_store_is_refused_by_java_as_by_us(
    messages: list[Message], tmp_path: Path
) -> None:
    """A message written with a schema neither side knows is refused, not guessed at."""
    good = messages[0]
    stranger = good.data[:2] + bytes(8) + good.data[10:]  # fingerprint 0: no such schema
    read = _java(tmp_path, [good, Message("stranger", good.schema, stranger)])
    assert read[good.label]["ok"]
    assert not read["stranger"]["ok"]
    assert read["stranger"]["error"].startswith("MissingSchemaException")
    with pytest.raises(UnknownSchemaError):
        CODEC.decode(stranger, good.schema)


def test_avro_java_parses_the_schema_files_themselves_to_our_fingerprints() -> None:
    """An outside reader starts from schemas/*.avsc, not from our expanded schemas:
    Avro Java's own parser (names resolved across files, as Avro 1.12's SchemaParser
    does) reads every file, current and kept, and finds each writer schema we know
    (every version a reader may meet on the wire) at our fingerprint."""
    try:
        parsed = read_schema_files(config.load().home, ROOT / "schemas")
    except AvroJavaError as exc:
        pytest.fail(f"Avro Java cross-check: {exc}", pytrace=False)
    files = sorted(ROOT.glob("schemas/*.avsc")) + sorted(ROOT.glob("schemas/history/*/*.avsc"))
    assert len(parsed) == len(files), "Java did not answer for every schema file"
    refused = [f"{p['file']}: {p['error']}" for p in parsed if not p["ok"]]
    assert not refused, "Avro Java refuses schema files:\n" + "\n".join(refused)
    java = {(p["schema"], p["fingerprint"]) for p in parsed if p["type"] == "record"}
    ours = {(v.name, v.fingerprint.hex()) for v in CODEC.versions()}
    assert ours <= java, f"writer schemas Java's parse of the files does not give: {ours - java}"
    current = {p["schema"]: p["fingerprint"] for p in parsed if "/history/" not in p["file"]}
    for name in CODEC.raw_schemas():
        assert current[name] == CODEC.fingerprint(name).hex(), name
