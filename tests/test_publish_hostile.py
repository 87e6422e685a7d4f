"""What a publisher is told matches what the router does, and hostile input is
refused in one line: ``safeshare publish`` (a real subprocess) and the Python API.

"Receipts never lie": every event the intake accepts, the router routes (not
quarantined, and shared with someone when policy allows); every event the router
would quarantine for a reason the sender can know, the intake refuses.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from broker.api import Publisher
from broker.clock import FixedClock
from broker.codec import MAX_EVENT_BYTES, EncodingError
from broker.codec.times import TimeBounds
from broker.intake import Intake
from broker.kafka.admin import Admin
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, RoutingCore
from broker.signing import AgencySigner
from broker.topics import Topics
from tests.helpers import (
    CODEC,
    ROOT,
    create_topics,
    example,
    read_all,
    safeshare,
    settings_for,
)

T = Topics("intake")
NOW = 1_795_000_000_000
POLICE = "devon-cornwall-police"
POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"
NO_KAFKA = {"SAFESHARE_BOOTSTRAP": "127.0.0.1:1"}


def safeshare_bytes(
    *args: str, env: dict[str, str], stdin: bytes
) -> subprocess.CompletedProcess[bytes]:
    """The real command, fed raw bytes (test_cli.safeshare feeds text)."""
    return subprocess.run(
        [sys.executable, "-m", "broker.cli.main", *args],
        input=stdin, capture_output=True, env={**os.environ, **env}, cwd=ROOT, timeout=120,
    )  # fmt: skip


def _policy(mode: str = "optional", key: AgencySigner | None = None) -> Policy:
    text = POLICY.read_text().replace("event_signatures: optional", f"event_signatures: {mode}")
    if key is not None:
        entry = key.registry_entry()
        line = "    keys: [{" + ", ".join(f"{k}: '{v}'" for k, v in entry.items()) + "}]"
        head = (
            "  - id: devon-cornwall-police\n    name: Devon and Cornwall Police\n"
            "    type: POLICE\n    local_authorities: [E06000027, E10000008]\n"
        )
        text = text.replace(head + "    keys: []", head + line)
    return Policy.from_text(text, field_classes=CODEC.data_classes())


def _core(policy: Policy) -> RoutingCore:
    return RoutingCore(
        codec=CODEC, decider=policy, consents=ConsentStore(), topics=T,
        clock=FixedClock(NOW), pseudonym_key=b"k" * 32,
    )  # fmt: skip


def _sized(total: int, agency: str = POLICE) -> dict[str, Any]:
    """The missing-episode event, its summary padded so the unsigned message is
    ``total`` bytes."""
    event = CODEC.from_json(example("missing_episode"))
    n = total - len(CODEC.encode({**event, "summary": ""}))
    for pad in range(n - 8, n + 1):
        event["summary"] = "x" * pad
        if len(CODEC.encode(event)) == total:
            return event
    raise AssertionError(f"no summary makes the message {total} bytes")


def _verdicts(
    event: dict[str, Any], policy: Policy, signer: AgencySigner | None, agency: str = POLICE
) -> tuple[str | None, str]:
    """(why the intake refused or None, what the router did with what would be sent)."""
    intake = Intake(agency=agency, codec=CODEC, signer=signer, policy=policy, clock=FixedClock(NOW))
    refused = None
    try:
        data = intake.encode(event)
    except EncodingError as exc:
        refused = str(exc)
        # What a careless sender would have sent anyway, for the router's verdict.
        data = Intake(agency=agency, codec=CODEC, signer=signer,
                      max_event_bytes=10**9).encode(event)  # fmt: skip
    routed = _core(policy).handle(Inbound(T.ingest(agency), 0, 1, None, data))
    if routed.quarantined:
        return refused, routed.quarantined
    return refused, "SHARED" if routed.shared else "WITHHELD_FROM_ALL"


SIGNER = AgencySigner.generate(POLICE)
STRANGER = AgencySigner.generate(POLICE)  # a key the policy does not hold


@pytest.mark.parametrize(
    ("case", "mode", "registered", "signer", "size", "router"),
    [
        ("optional, unsigned", "optional", None, None, 0, "SHARED"),
        ("optional, signed, no key registered", "optional", None, SIGNER, 0, "BAD_SIGNATURE"),
        ("optional, key registered, unsigned", "optional", SIGNER, None, 0, "BAD_SIGNATURE"),
        ("optional, key registered, signed", "optional", SIGNER, SIGNER, 0, "SHARED"),
        ("required, unsigned", "required", SIGNER, None, 0, "BAD_SIGNATURE"),
        ("required, signed with another key", "required", SIGNER, STRANGER, 0, "BAD_SIGNATURE"),
        ("required, signed", "required", SIGNER, SIGNER, 0, "SHARED"),
        ("at the size limit", "optional", None, None, MAX_EVENT_BYTES, "SHARED"),
        ("one byte over the limit", "optional", None, None, MAX_EVENT_BYTES + 1, "OVERSIZED"),
        ("signed, at the limit", "required", SIGNER, SIGNER, MAX_EVENT_BYTES - 71, "SHARED"),
        ("signed, one over", "required", SIGNER, SIGNER, MAX_EVENT_BYTES - 70, "OVERSIZED"),
    ],
)
def test_the_intake_refuses_exactly_what_the_router_would_not_route(
    case: str, mode: str, registered: AgencySigner | None, signer: AgencySigner | None,
    size: int, router: str,
) -> None:
    event = _sized(size) if size else CODEC.from_json(example("missing_episode"))
    refused, routed = _verdicts(event, _policy(mode, registered), signer)
    assert routed == router, case
    assert (refused is None) == (routed == "SHARED"), (case, refused)


def test_an_unregistered_agency_is_refused_the_router_would_share_nothing() -> None:
    event = CODEC.from_json(example("missing_episode"))
    event["source"] = {**event["source"], "agency_id": "nobody"}
    refused, routed = _verdicts(event, _policy(), None, agency="nobody")
    assert routed == "WITHHELD_FROM_ALL"
    assert refused is not None and "source.agency_id" in refused and "not registered" in refused


def test_an_oversized_event_names_the_field_its_size_and_the_limit() -> None:
    event = CODEC.from_json(example("missing_episode"))
    event["payload"][1]["police_reference"] = "x" * 300_000
    with pytest.raises(EncodingError) as info:
        Intake(agency=POLICE, codec=CODEC).encode(event)
    text = str(info.value)
    assert text.startswith("payload.MissingEpisode.police_reference: holds 300000 bytes")
    assert f"over the limit of {MAX_EVENT_BYTES} bytes" in text


def test_the_router_names_the_size_and_the_limit_in_the_quarantine_record() -> None:
    data = Intake(agency=POLICE, codec=CODEC, max_event_bytes=10**9).encode(
        _sized(MAX_EVENT_BYTES + 1)
    )
    routed = _core(_policy()).handle(Inbound(T.ingest(POLICE), 0, 1, None, data))
    q = CODEC.decode(routed.outputs[0].value, "safeshare.QuarantineRecord")
    assert q["reason"] == "OVERSIZED" and q["original"] == data
    assert q["detail"] == (
        f"message is {MAX_EVENT_BYTES + 1} bytes, over the limit of {MAX_EVENT_BYTES} bytes"
    )


def test_the_api_refuses_before_connecting_and_the_cli_says_the_same(tmp_path: Path) -> None:
    event = example("missing_episode", summary="x" * 300_000)
    with pytest.raises(EncodingError, match="summary: holds 300000 bytes") as info:
        Intake(agency=POLICE, codec=CODEC, policy=_policy()).encode(CODEC.from_json(event))
    out = safeshare(
        "publish", "--agency", POLICE, "-",
        env={**NO_KAFKA, "SAFESHARE_HOME": str(tmp_path)}, stdin=json.dumps(event),
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr == f"Error: <stdin>: event: {info.value}; nothing was sent\n"


def test_publish_refuses_unsigned_events_when_the_policy_requires_signatures(
    tmp_path: Path,
) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        POLICY.read_text().replace("event_signatures: optional", "event_signatures: required")
    )
    out = safeshare(
        "publish", "--agency", POLICE, "-",
        env={**NO_KAFKA, "SAFESHARE_HOME": str(tmp_path), "SAFESHARE_POLICY": str(policy)},
        stdin=json.dumps(example("missing_episode")),
    )  # fmt: skip
    assert out.returncode == 1
    assert out.stderr.startswith("Error: <stdin>: event: signature: event is not signed")
    assert out.stderr.endswith("nothing was sent\n") and "Traceback" not in out.stderr


@pytest.mark.kafka
def test_the_publisher_sends_nothing_it_refuses(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    create_topics(admin, settings_for(topics, tmp_path))
    good, big = example("missing_episode"), example("missing_episode", summary="x" * 300_000)
    with Publisher(
        bootstrap=kafka_bootstrap, agency=POLICE, topics=topics, policy=_policy()
    ) as pub:
        with pytest.raises(EncodingError, match="summary: holds 300000 bytes"):
            pub.publish_json(big)
        receipt = pub.publish_json(good)
    sent = read_all(kafka_bootstrap, topics.ingest(POLICE))
    assert [(r.offset, CODEC.decode(r.value or b"")["event_id"]) for r in sent] == [
        (receipt.offset, good["event_id"])
    ]


# -- hostile input: one line naming the place, exit 1, nothing sent, never a traceback --


def _text(event: dict[str, Any] | None = None, **changes: Any) -> str:
    return json.dumps(event or example("missing_episode", **changes))


def _replace(old: str, new: str, name: str = "missing_episode") -> bytes:
    text = json.dumps(example(name))
    assert old in text, old
    return text.replace(old, new, 1).encode()


GOOD = _text()
REPORTED = '"reported_at": "2024-11-08T22:15:12.481Z"'
OCCURRED = '"occurred_at": "2024-11-08T21:40:00Z"'
SCHOOL = "example-academy"
HOSTILE: list[tuple[str, bytes, str]] = [
    # (case, input, what the one line must say)
    ("invalid UTF-8", GOOD.encode().replace(b"Looked-after", b"Looked\xff-after"),
     f"byte {GOOD.index('Looked-after') + 6} (line 1): not valid UTF-8"),
    ("UTF-16 byte order mark", b"\xff\xfe" + GOOD.encode("utf-16-le"), "byte 0: not UTF-8"),
    ("binary garbage", random.Random(18).randbytes(4096), "not valid UTF-8"),
    ("nested 100k deep", b"[" * 100_000 + b"]" * 100_000, "byte 64 (line 1, column 65): nested"),
    ("nested 100k deep in a field", _replace('"summary": ', '"summary": ' + "[" * 100_000),
     "nested more than 64 deep"),
    ("5 MB string", _text(summary="x" * 5_000_000).encode(), "event: summary: holds 5000000 bytes"),
    ("NaN", _replace('"episode_number_in_90_days": 3', '"episode_number_in_90_days": NaN'),
     "NaN is not a JSON number"),
    ("-Infinity", _replace('"episode_number_in_90_days": 3',
                           '"episode_number_in_90_days": -Infinity'),
     "-Infinity is not a JSON number"),
    ("1e999 (infinite double)", _replace('"attendance_percent": 61.5',
                                         '"attendance_percent": 1e999', "education_concern"),
     "payload.EducationConcern.attendance_percent: not a finite number"),
    ("duplicate key", _replace('"risk_level": "HIGH"', '"risk_level": "HIGH", "risk_level": "LOW"'),
     'gives the key "risk_level" twice'),
    ("wrong type", _replace('"risk_level": "HIGH"', '"risk_level": 3'),
     "event: risk_level: expected a symbol"),
    ("huge integer", _replace('"episode_number_in_90_days": 3',
                              '"episode_number_in_90_days": ' + "9" * 100_000),
     "payload.MissingEpisode.episode_number_in_90_days: out of range for Avro int"),
    ("huge negative time", _replace('"reported_at": "2024-11-08T22:15:12.481Z"',
                                    '"reported_at": -' + "9" * 30),
     "reported_at: timestamp out of range"),
    ("reported_at -1 (1969)", _replace(REPORTED, '"reported_at": -1'),
     "event: reported_at: before 2000-01-01T00:00:00Z, not a plausible time"),
    ("occurred_at in 1900", _replace(OCCURRED, '"occurred_at": "1900-01-01T00:00:00Z"'),
     "event: occurred_at: before 2000-01-01T00:00:00Z"),
    ("occurred_at in 9999", _replace(OCCURRED, '"occurred_at": "9999-12-31T23:59:59Z"'),
     "event: occurred_at: in the future (more than 300 s from now)"),
    ("occurred after reported", _replace(OCCURRED, '"occurred_at": "2024-11-09T22:15:12Z"'),
     "event: occurred_at: after reported_at"),
    ("empty input", b"", "no event given (empty input)"),
    ("only whitespace", b" \n\t\r\n", "no event given (empty input)"),
    ("empty array", b"[]", "no event given (an empty array)"),
    ("not an object", b"[1, 2]", "event 1: (root): expected record safeshare.ConcernEvent"),
    ("lone surrogate", _replace('"Jamie"', '"\\ud800"'),
     "subject.given_name: not valid Unicode (lone surrogate)"),
    ("raw control character", _replace('"Jamie"', '"Ja\x00mie"'), "Invalid control character"),
    ("truncated", GOOD.encode()[:200], "not valid JSON"),
    ("two values on a line", (GOOD + " " + GOOD).encode(), "more after the value"),
    ("JSON lines, one bad line", (GOOD + "\n" + '{"event_id": }' + "\n" + GOOD).encode(),
     f"<stdin>: byte {len(GOOD) + 1 + 13} (line 2, column 14): not valid JSON"),
    ("JSON lines, one invalid event", (GOOD + "\n" + _text(risk_level="SEVERE")).encode(),
     "event 2 (line 2): risk_level: not a symbol"),
    ("oversized event", _text(summary="x" * 300_000).encode(),
     f"over the limit of {MAX_EVENT_BYTES} bytes"),
    ("another agency's event", _text(example("education_concern")).encode(),
     "source.agency_id: publishing as agency 'devon-cornwall-police'"),
]


def _api_refusal(data: bytes) -> str:
    intake = Intake(agency=POLICE, codec=CODEC, policy=_policy(), clock=FixedClock(NOW))
    with pytest.raises(EncodingError) as info:
        intake.encode_all(data, "<stdin>")
    return str(info.value)


#: The inputs that once gave a traceback or another exit code: also through a
#: real process (the rest go through the same click command in this process).
IN_A_REAL_PROCESS = {"invalid UTF-8", "nested 100k deep", "5 MB string", "NaN", "empty input"}


def _cli_in_process(data: bytes, home: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, str]:
    from click.testing import CliRunner  # noqa: PLC0415

    from broker.cli.main import _register, cli  # noqa: PLC0415

    _register()
    for k, v in {**NO_KAFKA, "SAFESHARE_HOME": str(home)}.items():
        monkeypatch.setenv(k, v)
    result = CliRunner().invoke(cli, ["publish", "--agency", POLICE, "-"], input=data)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a traceback is the defect this test exists for
    return result.exit_code, result.stderr


@pytest.mark.parametrize(("case", "data", "says"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_input_is_refused_in_one_line_by_the_cli_and_the_api(
    case: str, data: bytes, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case in IN_A_REAL_PROCESS:
        out = safeshare_bytes(
            "publish", "--agency", POLICE, "-",
            env={**NO_KAFKA, "SAFESHARE_HOME": str(tmp_path)}, stdin=data,
        )  # fmt: skip
        code, err = out.returncode, out.stderr.decode()
    else:
        code, err = _cli_in_process(data, tmp_path, monkeypatch)
    assert code == 1, (case, err[-2000:])
    assert "Traceback" not in err and err.count("\n") == 1, err[-2000:]
    assert says in err, err
    assert err.endswith("; nothing was sent\n")
    assert "Jamie" not in err and "xxxxxxxx" not in err  # no personal data, no values
    # The API (what the gateway will call) refuses with the very same words.
    assert err == f"Error: {_api_refusal(data)}; nothing was sent\n"


def test_a_utf8_byte_order_mark_is_ignored_and_the_event_accepted() -> None:
    intake = Intake(agency=POLICE, codec=CODEC, policy=_policy(), clock=FixedClock(NOW))
    [(record, data)] = intake.encode_all(b"\xef\xbb\xbf" + GOOD.encode(), "<stdin>")
    assert CODEC.decode(data)["event_id"] == record["event_id"] == json.loads(GOOD)["event_id"]


@pytest.mark.kafka
def test_json_lines_with_one_bad_line_send_nothing_at_all(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    create_topics(admin, settings_for(topics, tmp_path))
    env = {
        "SAFESHARE_BOOTSTRAP": kafka_bootstrap,
        "SAFESHARE_NAMESPACE": topics.namespace,
        "SAFESHARE_HOME": str(tmp_path),
    }
    bad = "\n".join([_text(), _text(risk_level="SEVERE"), _text()]).encode()
    out = safeshare_bytes("publish", "--agency", POLICE, "-", env=env, stdin=bad)
    assert out.returncode == 1
    assert b"event 2 (line 2): risk_level" in out.stderr and out.stdout == b""
    good = "\n".join([_text(), _text()]).encode()
    out = safeshare_bytes("publish", "--agency", POLICE, "-", env=env, stdin=good)
    assert out.returncode == 0, out.stderr
    # Only the second invocation's two events ever reached the topic.
    assert len(read_all(kafka_bootstrap, topics.ingest(POLICE))) == 2


@pytest.mark.parametrize(
    ("times", "says"),
    [
        ({"reported_at": -1}, "reported_at: before 2000-01-01T00:00:00Z"),
        ({"occurred_at": "1900-01-01T00:00:00Z"}, "occurred_at: before 2000-01-01T00:00:00Z"),
        ({"occurred_at": "9999-12-31T23:59:59Z"}, "occurred_at: in the future"),
        ({"occurred_at": NOW - 1000, "reported_at": NOW - 3_600_000},
         "occurred_at: after reported_at"),
    ],
)
def test_implausible_times_are_refused_at_intake_and_quarantined_if_they_arrive_anyway(
    times: dict[str, Any], says: str
) -> None:
    event = CODEC.from_json(example("missing_episode", **times))
    with pytest.raises(EncodingError, match=says):
        Intake(agency=POLICE, codec=CODEC, policy=_policy(), clock=FixedClock(NOW)).encode(event)
    data = CODEC.encode(event)  # a sender that skipped the intake
    routed = _core(_policy()).handle(Inbound(T.ingest(POLICE), 0, 1, None, data))
    assert routed.quarantined == "SCHEMA_INVALID" and not routed.shared
    q = CODEC.decode(routed.outputs[0].value, "safeshare.QuarantineRecord")
    assert q["original"] == data and says in q["detail"]
    assert [json.loads(leaf)["kind"] for leaf in routed.leaves] == ["QUARANTINED"]


def test_the_router_judges_the_future_at_its_own_clock_and_skew() -> None:
    event = CODEC.from_json(example("missing_episode", reported_at=NOW + 60_000))
    data = CODEC.encode(event)
    core = _core(_policy())
    assert core.handle(Inbound(T.ingest(POLICE), 0, 1, None, data)).quarantined is None
    core.time_bounds = TimeBounds(future_skew_ms=10_000)
    routed = core.handle(Inbound(T.ingest(POLICE), 0, 2, None, CODEC.encode(
        CODEC.from_json(example("missing_episode", reported_at=NOW + 60_000))
    )))  # fmt: skip
    assert routed.quarantined == "SCHEMA_INVALID"


@pytest.mark.kafka
def test_the_gateway_desk_judges_times_with_the_configured_skew(
    kafka_bootstrap: str, topics: Topics
) -> None:
    from broker.gateway.publishing import EventDesk, Refused  # noqa: PLC0415

    body = _text(reported_at=NOW + 60_000, occurred_at=NOW).encode()
    for skew_ms, refused in ((300_000, False), (10_000, True)):
        desk = EventDesk(
            bootstrap=kafka_bootstrap, topics=topics, codec=CODEC, policy=_policy(),
            clock=FixedClock(NOW), time_bounds=TimeBounds(future_skew_ms=skew_ms),
        )  # fmt: skip
        try:
            if refused:
                with pytest.raises(Refused, match=r"reported_at: in the future \(more than 10 s"):
                    desk.check(POLICE, body)
            else:
                [(record, _, _)] = desk.check(POLICE, body)
                assert record["event_id"] == json.loads(body)["event_id"]
        finally:
            desk.close()
