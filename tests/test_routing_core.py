"""The router's decision core without Kafka: one message in, what must be written out."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import rfc8785

from broker.audit import leaf_writer as leaf_writer_module
from broker.audit.exceptions import MalformedError
from broker.audit.leaf import AuditLeaf, audit_encoder, decode_batch
from broker.clock import FixedClock
from broker.codec import Codec
from broker.policy import ConsentStore, Policy
from broker.routing.core import Inbound, Routed, RoutingCore
from broker.signing import AgencySigner, sign_message
from broker.topics import Topics
from tests.helpers import CODEC, example

T = Topics("unit")
NOW = 1_795_000_000_000
POLICY = Path(__file__).resolve().parent.parent / "deploy" / "policy" / "example-mash.yaml"


@pytest.fixture
def core() -> RoutingCore:
    return RoutingCore(
        codec=CODEC,
        decider=Policy.load(POLICY, field_classes=CODEC.data_classes()),
        consents=ConsentStore(),
        topics=T,
        clock=FixedClock(NOW),
        pseudonym_key=b"k" * 32,
        max_message_bytes=64 * 1024,
    )


def _msg(topic: str, value: bytes | None, offset: int = 7, key: bytes | None = None) -> Inbound:
    return Inbound(topic, 0, offset, key, value)


def _encoded(name: str) -> bytes:
    return CODEC.encode(CODEC.from_json(example(name)))


def test_each_subscriber_gets_one_decision_and_shares_carry_minimised_copies(
    core: RoutingCore,
) -> None:
    routed = core.handle(_msg(T.ingest("devon-cornwall-police"), _encoded("missing_episode")))
    assert routed.quarantined is None
    subscribers = {json.loads(lf)["recipient"] for lf in routed.leaves}
    assert len(subscribers) == len(routed.leaves) == 11
    assert len(routed.outputs) == len(routed.shared) > 0
    for out in routed.outputs:
        record = CODEC.decode(out.value, "safeshare.FeedRecord")
        assert out.topic == T.feed(record["decision"]["subscriber"])
        assert record["event"]["reporter"]["contact"] is None or (
            "referrer" in record["decision"]["data_classes_shared"]
        )


def test_each_feed_copy_is_exactly_the_redacted_event_the_codec_would_write(
    core: RoutingCore,
) -> None:
    # The router splices one encoding of the event per subscriber instead of
    # copying and re-encoding it; a subscriber must not be able to tell.
    copies = 0
    for name in ("missing_episode", "health_concern", "police_notification", "education_concern"):
        data = _encoded(name)
        event = CODEC.decode(data)
        routed = core.handle(_msg(T.ingest(event["source"]["agency_id"]), data))
        copies += len(routed.outputs)
        for out in routed.outputs:
            record = CODEC.decode(out.value, "safeshare.FeedRecord")
            classes = set(record["decision"]["data_classes_shared"])
            expected = {"decision": record["decision"], "event": CODEC.redact(event, classes)[0]}
            assert out.value == CODEC.encode(expected, "safeshare.FeedRecord"), name
    assert copies >= 8


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "UNDECODABLE"),
        (b"", "UNDECODABLE"),
        (b"\xc3\x02" + b"\0" * 12, "UNDECODABLE"),
        (b"\xc3\x01" + b"\xff" * 8 + b"\x00", "UNKNOWN_SCHEMA"),
        (b"\xc3\x01" + b"\0" * 70_000, "OVERSIZED"),
    ],
)
def test_undecodable_input_is_quarantined_with_a_reason_and_one_audit_leaf(
    core: RoutingCore, value: bytes | None, reason: str
) -> None:
    routed = core.handle(_msg(T.ingest("torbay-hospital"), value))
    assert routed.quarantined == reason
    assert [o.topic for o in routed.outputs] == [T.quarantine]
    q = CODEC.decode(routed.outputs[0].value, "safeshare.QuarantineRecord")
    assert q["original"] == value
    assert (q["source_topic"], q["source_partition"], q["source_offset"]) == (
        T.ingest("torbay-hospital"),
        0,
        7,
    )
    assert [json.loads(lf)["kind"] for lf in routed.leaves] == ["QUARANTINED"]


def test_truncated_event_is_quarantined(core: RoutingCore) -> None:
    data = _encoded("missing_episode")
    routed = core.handle(_msg(T.ingest("devon-cornwall-police"), data[: len(data) // 2]))
    assert routed.quarantined == "UNDECODABLE"


def test_event_on_another_agencys_topic_is_quarantined(core: RoutingCore) -> None:
    routed = core.handle(_msg(T.ingest("example-academy"), _encoded("missing_episode")))
    assert routed.quarantined == "AGENCY_MISMATCH"
    assert routed.shared == []


def test_a_defect_while_deciding_quarantines_that_message_only(core: RoutingCore) -> None:
    class Broken:
        event_signatures = "optional"

        def agency(self, agency_id: str) -> None:
            return None

        def decide_all(self, *a: object) -> list[object]:
            raise RuntimeError("bug")

    core.decider = Broken()
    routed = core.handle(_msg(T.ingest("devon-cornwall-police"), _encoded("missing_episode")))
    assert routed.quarantined == "OTHER"
    assert routed.shared == []


def test_feed_key_hides_the_pseudonym_from_a_recipient_not_granted_it(core: RoutingCore) -> None:
    assert core._to.key("psn-1", True) == b"psn-1"
    opaque = core._to.key("psn-1", False)
    assert opaque and b"psn-1" not in opaque
    assert opaque == core._to.key("psn-1", False)  # same child, same partition


def test_a_consent_record_on_its_agencys_topic_is_applied_and_audited(
    core: RoutingCore,
) -> None:
    consent = example("consent_record")  # the return-home service, entitled by the policy
    data = CODEC.encode(CODEC.from_json(consent))
    routed = core.handle(_msg(T.consent("safe-return-charity"), data))
    assert routed.quarantined is None and routed.outputs == []
    assert [json.loads(lf)["kind"] for lf in routed.leaves] == ["CONSENT"]
    assert len(core.consents) == 1
    # A record that is not consent, on a consent topic, is quarantined.
    bad = core.handle(_msg(T.consent("devon-cornwall-police"), _encoded("missing_episode")))
    assert bad.quarantined == "SCHEMA_INVALID"
    assert len(core.consents) == 1


def test_codec_fixture_is_the_projects(core: RoutingCore) -> None:
    assert isinstance(core.codec, Codec)


# -- agency signatures ------------------------------------------------------------


def _signed_core(mode: str, signer: AgencySigner, **key: object) -> RoutingCore:
    text = POLICY.read_text().replace("event_signatures: optional", f"event_signatures: {mode}")
    entry = {**signer.registry_entry(), **key}
    line = "    keys: [{" + ", ".join(f"{k}: '{v}'" for k, v in entry.items()) + "}]"
    text = text.replace(
        "  - id: devon-cornwall-police\n    name: Devon and Cornwall Police\n"
        "    type: POLICE\n    local_authorities: [E06000027, E10000008]\n    keys: []",
        "  - id: devon-cornwall-police\n    name: Devon and Cornwall Police\n"
        "    type: POLICE\n    local_authorities: [E06000027, E10000008]\n" + line,
    )
    policy = Policy.from_text(text, field_classes=CODEC.data_classes())
    assert policy.agency("devon-cornwall-police").keys, "key not injected"
    return RoutingCore(
        codec=CODEC, decider=policy, consents=ConsentStore(), topics=T,
        clock=FixedClock(NOW), pseudonym_key=b"k" * 32,
    )


def _signed(signer: AgencySigner, name: str = "missing_episode") -> bytes:
    unsigned = CODEC.encode({**CODEC.from_json(example(name)), "signature": None})
    return sign_message(unsigned, signer)


POLICE = "devon-cornwall-police"


def test_a_signed_event_is_routed_and_its_signature_reaches_no_one_else() -> None:
    signer = AgencySigner.generate(POLICE)
    core = _signed_core("required", signer)
    routed = core.handle(_msg(T.ingest(POLICE), _signed(signer)))
    assert routed.quarantined is None and routed.shared


@pytest.mark.parametrize(
    "tamper",
    ["unsigned", "other_key", "flipped_body", "flipped_signature", "other_agency_name"],
)
def test_forged_missing_or_mismatched_signatures_are_quarantined(tamper: str) -> None:
    signer = AgencySigner.generate(POLICE)
    core = _signed_core("required", signer)
    if tamper == "unsigned":
        data = _encoded("missing_episode")
    elif tamper == "other_key":
        data = _signed(AgencySigner.generate(POLICE))
    elif tamper == "flipped_body":
        good = bytearray(_signed(signer))
        good[40] ^= 0x01
        data = bytes(good)
    elif tamper == "flipped_signature":
        good = bytearray(_signed(signer))
        good[-3] ^= 0x01
        data = bytes(good)
    else:  # the police key, but a signature made for another agency's name
        data = _signed(AgencySigner("torbay-hospital", signer.private_key))
    routed = core.handle(_msg(T.ingest(POLICE), data))
    assert routed.quarantined in ("BAD_SIGNATURE", "UNDECODABLE")
    assert routed.shared == [] and json.loads(routed.leaves[0])["kind"] == "QUARANTINED"


def test_an_agency_with_a_key_must_sign_even_when_signatures_are_optional() -> None:
    signer = AgencySigner.generate(POLICE)
    core = _signed_core("optional", signer)
    routed = core.handle(_msg(T.ingest(POLICE), _encoded("missing_episode")))
    assert routed.quarantined == "BAD_SIGNATURE"
    # Other agencies (no keys yet) may publish unsigned while signatures are optional.
    routed = core.handle(_msg(T.ingest("torbay-hospital"), _encoded("health_concern")))
    assert routed.quarantined is None


def test_rotation_old_key_accepted_during_overlap_refused_after() -> None:
    old = AgencySigner.generate(POLICE)
    core = _signed_core("required", old, not_after="2026-11-20T00:00:00Z")
    routed = core.handle(_msg(T.ingest(POLICE), _signed(old)))  # NOW is 2026-11-18
    assert routed.quarantined is None
    core.clock.set(NOW + 7 * 24 * 3600 * 1000)
    routed = core.handle(_msg(T.ingest(POLICE), _signed(old)))
    assert routed.quarantined == "BAD_SIGNATURE"


# -- audit leaves -------------------------------------------------------------------

EXAMPLES = ("missing_episode", "health_concern", "police_notification", "education_concern",
            "exploitation_screening", "return_home_interview")  # fmt: skip


def _messages() -> tuple[Inbound, list[Inbound]]:
    """A consent record, then every example event twice (fresh ids: the decisions'
    templates are reused), one of them again (a duplicate) and an undecodable
    message (a quarantine)."""
    # The education concern's child consents to its school's safeguarding lead: a
    # share whose leaf carries a consent_ref (the health concern's carry obligations).
    consent = example("consent_record")
    consent["payload"].update(expires_at=None, purpose="SAFEGUARDING", scope_roles=["school_dsl"])
    consent["subject"]["pseudonym"] = example("education_concern")["subject"]["pseudonym"]
    out = []
    for name in EXAMPLES * 2:
        data = _encoded(name)
        out.append(_msg(T.ingest(CODEC.decode(data)["source"]["agency_id"]), data))
    consent_msg = _msg(T.consent("safe-return-charity"), CODEC.encode(CODEC.from_json(consent)))
    return consent_msg, [*out, out[0], _msg(T.ingest("torbay-hospital"), b"\xc3\x02")]


def _route_all(core: RoutingCore, consent: Inbound, messages: list[Inbound]) -> list[Routed]:
    assert [json.loads(lf)["kind"] for lf in core.handle(consent).leaves] == ["CONSENT"]
    return [core.handle(m) for m in messages]


class _NoLeafEvent:
    """Stands in for LeafEvent: declines every event, so the writer takes the dict path."""

    @staticmethod
    def checked(**fields: object) -> None:
        return None


def test_decision_leaves_are_the_bytes_the_leaf_dicts_give(
    core: RoutingCore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer fills a decision's leaf from its template; the same messages routed
    the slow way (a dict per leaf, then leaf_bytes) give the same leaves, byte for
    byte, and both are exactly AuditLeaf(**fields).to_bytes() (RFC 8785)."""
    consent, messages = _messages()
    fast = _route_all(core, consent, messages)
    monkeypatch.setattr(leaf_writer_module, "LeafEvent", _NoLeafEvent)
    slow = _route_all(
        RoutingCore(
            codec=CODEC, decider=core.decider, consents=ConsentStore(), topics=T,
            clock=FixedClock(NOW), pseudonym_key=b"k" * 32, max_message_bytes=64 * 1024,
        ),
        consent,
        messages,
    )  # fmt: skip
    seen: list[dict[str, Any]] = []
    for f, s in zip(fast, slow, strict=True):
        assert f.outputs == s.outputs and f.quarantined == s.quarantined
        assert f.leaves == s.leaves
        for data in f.leaves:
            assert type(data) is bytes
            fields = json.loads(data)
            assert AuditLeaf.from_bytes(data).to_bytes() == data
            assert rfc8785.dumps(fields) == data
            seen.append(fields)
    assert audit_encoder([lf for r in fast for lf in r.leaves]) == audit_encoder(
        [lf for r in slow for lf in r.leaves]
    )
    # What the examples covered: every kind, a consent relied on, an obligation.
    assert {leaf["kind"] for leaf in seen} == {"SHARED", "WITHHELD", "DUPLICATE", "QUARANTINED"}
    assert any(leaf["consent_ref"] for leaf in seen if leaf["kind"] == "SHARED")
    assert any(leaf["obligations"] for leaf in seen if leaf["kind"] == "SHARED")


class _Tampering:
    """The example policy, but one field of every decision replaced."""

    def __init__(self, policy: Any, **changes: Any) -> None:
        self.policy, self.changes = policy, changes

    def __getattr__(self, name: str) -> Any:
        return getattr(self.policy, name)

    def decide_all(self, *args: Any) -> list[Any]:
        decisions = self.policy.decide_all(*args)
        return [dataclasses.replace(d, **self.changes) for d in decisions]


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"policy_digest": "not-a-digest"}, "policy_digest"),
        ({"policy_digest": "AB" * 32}, "policy_digest"),
        ({"now_ms": 2**53}, "time_ms"),  # a valid Avro long, beyond JCS's safe integers
    ],
)
def test_a_decision_value_the_template_refuses_fails_the_transaction(
    core: RoutingCore, change: dict[str, Any], says: str
) -> None:
    """Not a quarantine of the message: the leaf cannot be written, the core raises,
    so the router's transaction fails and nothing is shared."""
    core.decider = _Tampering(core.decider, **change)
    with pytest.raises(MalformedError, match=says):
        core.handle(_msg(T.ingest("devon-cornwall-police"), _encoded("missing_episode")))


class _Label(str):
    """A str subclass: a valid value the template does not vouch for."""


def test_a_value_the_template_declines_still_gives_the_dataclass_bytes(core: RoutingCore) -> None:
    digest = "ab" * 32
    core.decider = _Tampering(core.decider, policy_digest=_Label(digest))
    routed = core.handle(_msg(T.ingest("devon-cornwall-police"), _encoded("missing_episode")))
    assert routed.leaves
    leaves = [AuditLeaf.from_bytes(data) for data in routed.leaves]
    assert all(leaf.policy_digest == digest for leaf in leaves)
    assert [leaf.to_bytes() for leaf in leaves] == routed.leaves
    assert decode_batch(audit_encoder(routed.leaves)[0]) == routed.leaves
