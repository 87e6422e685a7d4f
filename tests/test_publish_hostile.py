"""What a publisher is told matches what the router does, and hostile input is
refused in one line: ``safeshare publish`` (a real subprocess) and the Python API.

"Receipts never lie": every event the intake accepts, the router routes (not
quarantined, and shared with someone when policy allows); every event the router
would quarantine for a reason the sender can know, the intake refuses.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from broker.api import Publisher
from broker.clock import FixedClock
from broker.codec import MAX_EVENT_BYTES, EncodingError
from broker.intake import Intake
from broker.kafka.admin import Admin
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, RoutingCore
from broker.signing import AgencySigner
from broker.topics import Topics
from tests.routing_helpers import CODEC, create_topics, example, read_all, settings_for
from tests.test_cli import safeshare

T = Topics("intake")
NOW = 1_795_000_000_000
POLICE = "devon-cornwall-police"
POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"
NO_KAFKA = {"SAFESHARE_BOOTSTRAP": "127.0.0.1:1"}


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
    assert out.stderr == f"Error: event: {info.value}; nothing was sent\n"


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
    assert out.stderr.startswith("Error: event: signature: event is not signed")
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
