"""An agency whose policy entry says ``notify_on_consultation`` is told, on its
status topic, when a team opens a concern it published whose copy shares one
of those data classes; the notice is audited (a NOTIFIED leaf with the
notice's digest). Against the real broker, router, loop and workspace; the
police (no such setting) are not told."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from broker.audit.leaf import AuditLeaf, LeafKind, decode_batch
from broker.kafka.admin import Admin
from broker.loop.core import NOTICE
from broker.policy import Policy, PolicyError
from broker.topics import Topics
from tests.helpers import create_topics, example, publish, read_all, settings_for, wait_for
from tests.policy_helpers import EXAMPLE_POLICY
from tests.workspace_helpers import CODEC, http_sign_in, running_workspace


def consulted_notices(bootstrap: str, topics: Topics, agency: str) -> list[tuple[dict, bytes]]:  # type: ignore[type-arg]
    out = []
    for r in read_all(bootstrap, topics.status(agency), timeout_s=1.0):
        n = CODEC.decode(r.value or b"", NOTICE)
        if n["kind"] == "CONSULTED":
            out.append((n, r.value or b""))
    return out


def notified_leaves(bootstrap: str, topics: Topics) -> list[AuditLeaf]:
    leaves = [AuditLeaf.from_bytes(b) for r in read_all(bootstrap, topics.audit, timeout_s=1.0)
              if r.value for b in decode_batch(r.value)]
    return [x for x in leaves if x.kind is LeafKind.NOTIFIED and x.outcome == "CONSULTED"]


@pytest.mark.kafka
def test_the_hospital_is_told_its_health_concern_was_consulted_and_the_police_are_not(
    kafka_bootstrap: str, topics: Topics, admin: Admin, tmp_path: Path
) -> None:
    s = settings_for(topics, tmp_path)
    policy = create_topics(admin, s)
    assert policy.agency("torbay-hospital").notify_on_consultation == {"health"}  # type: ignore[union-attr]
    health = example("health_concern")
    missing = example("missing_episode")
    publish(kafka_bootstrap, topics, "torbay-hospital", health)
    publish(kafka_bootstrap, topics, "devon-cornwall-police", missing)
    with running_workspace(kafka_bootstrap, topics, s, policy) as url:
        sam = http_sign_in(url, "sam")
        psn = health["subject"]["pseudonym"]
        wait_for("both concerns in the MASH's chronology", lambda: all(
            e["event_id"] in sam.get(f"/workspace/children/{psn}").text
            for e in (health, missing)), timeout_s=150)

        wait_for("the hospital's CONSULTED notice", lambda: bool(consulted_notices(
            kafka_bootstrap, topics, "torbay-hospital")), timeout_s=60)
        notices = consulted_notices(kafka_bootstrap, topics, "torbay-hospital")
        n, raw = notices[0]
        assert (n["event_id"], n["recipient"], n["about"], n["purpose"]) == (
            health["event_id"], "torbay-hospital", "torbay-mash", "SAFEGUARDING")
        assert "sam" not in raw.decode("latin-1")  # the team, never the person
        assert {x[0]["event_id"] for x in notices} == {health["event_id"]}
        assert consulted_notices(kafka_bootstrap, topics, "devon-cornwall-police") == []

        leaves = notified_leaves(kafka_bootstrap, topics)
        digests = {hashlib.sha256(raw).hexdigest() for _, raw in notices}
        assert {x.delivered_digest for x in leaves} == digests
        assert all(x.recipient == "torbay-hospital" and x.reason == "CONSULTED by torbay-mash"
                   for x in leaves)


def test_notify_on_consultation_is_all_or_known_data_classes() -> None:
    text = EXAMPLE_POLICY.read_text()
    everything = Policy.from_text(text.replace("notify_on_consultation: [health]",
                                               "notify_on_consultation: all"))
    hospital = everything.agency("torbay-hospital")
    assert hospital is not None and hospital.notified_of(["location"])
    police = everything.agency("devon-cornwall-police")
    assert police is not None and not police.notified_of(["police", "location"])
    with pytest.raises(PolicyError, match="unknown data class 'helth'"):
        Policy.from_text(text.replace("notify_on_consultation: [health]",
                                      "notify_on_consultation: [helth]"))
    with pytest.raises(PolicyError, match="notify_on_consultation.*'all' or a list"):
        Policy.from_text(text.replace("notify_on_consultation: [health]",
                                      "notify_on_consultation: yes"))
