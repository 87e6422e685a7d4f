"""A school forges consent, on the secured broker: refused, audited, and no decision changes.

The attack of issue 18 part 1, replayed against the secured local broker
(SASL_SSL, StandardAuthorizer, ACLs from the policy; tests/secured.py) with
every agency holding a signing key and ``event_signatures: required``. The
school, logged in as itself and signing with its own registered key:

- cannot write the return-home service's consent topic (Kafka refuses it);
- writes a record in the service's name on its own consent topic:
  quarantined AGENCY_MISMATCH;
- records GIVEN, then WITHDRAWN, for a child it never met, on its own topic:
  quarantined NOT_ENTITLED (the policy does not entitle schools to record
  consent).

Each quarantine is an audit leaf, no CONSENT leaf is written for them, and the
decisions about the child's next concerns are those without consent; once the
service records consent (a CONSENT leaf), the school's forged withdrawal does
not stop the shares either. Every routing round is a new router process whose
consent state is rebuilt from the audit log, so the forged records count after
a restart neither.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from broker import config
from broker.api import Publisher
from broker.audit.checkpointer import Checkpointer
from broker.audit.leaf import LeafKind, subject_pseudonym
from broker.audit.stream import read_log
from broker.audit.verify import SUBJECT_HISTORY, verify_bundle, who_saw
from broker.clock import SystemClock
from broker.demo import signed_policy
from broker.kafka import acl
from broker.kafka.admin import Admin
from broker.kafka.configuration import standard_topic_specs
from broker.kafka.exceptions import KafkaError
from broker.kafka.producer import make_producer
from broker.keyfiles import SUBJECT_KEY_FILE
from broker.routing.app import build_core, build_service
from broker.routing.core import Routed
from broker.signing import AgencySigner
from broker.topics import Topics
from tests.helpers import CODEC, example
from tests.secured import Secured

pytestmark = pytest.mark.kafka

SCHOOL, RHI = "example-academy", "safe-return-charity"
CHILD = f"psn-{uuid4().hex[:8]}"


@pytest.fixture
def env(secured: Secured, tmp_path: Path) -> Iterator[tuple[config.Settings, Any]]:
    """A namespace of its own on the secured broker, and a policy with every agency's
    key registered and signatures required (as ``make run`` writes it)."""
    t = Topics(f"t{uuid4().hex[:10]}")
    with Admin(secured.bootstrap, credentials=secured.creds("admin")) as admin:
        admin.ensure_topics(standard_topic_specs(
            t, secured.agencies, secured.subscribers, partitions=1
        ))
        acl.apply(admin, acl.policy_acls(secured.policy, t), t)
    s = replace(config.load({}), namespace=t.namespace, home=tmp_path)
    signers, path = signed_policy(s)
    yield replace(s, policy_path=path), signers


def _consent(agency: str, status: str, *, source: str | None = None) -> dict[str, Any]:
    event = example("consent_record")
    named = source or agency
    event["source"] = {"agency_id": named, "agency_type": "SCHOOL" if named == SCHOOL
                       else "VOLUNTARY", "system": "MIS"}
    event["subject"] = {"pseudonym": CHILD, "local_authority": "E06000027"}
    event["payload"].update(
        status=status, purpose="SAFEGUARDING", scope_roles=[], scope_data_classes=[],
        expires_at=None,
    )  # fmt: skip
    return event


def _concern() -> dict[str, Any]:
    """The school's education concern about the child, without any reason to share it
    without consent: the MASH receives it only on consent."""
    event = example("education_concern")
    event["subject"] = {**event["subject"], "pseudonym": CHILD}
    event["sharing"] = {"no_consent_reason": None, "justification": None, "break_glass": False}
    return event


def _publish(secured: Secured, s: config.Settings, signers: Any, agency: str,
             event: dict[str, Any]) -> None:
    with Publisher(
        bootstrap=secured.bootstrap, agency=agency, topics=s.topics, codec=CODEC,
        signer=signers[agency],
        producer_config={"credentials": secured.creds(acl.agency_user(agency))},
    ) as pub:
        pub.publish_json(event)


def _route(secured: Secured, s: config.Settings, *events: dict[str, Any]) -> list[Routed]:
    """Route ``events`` by new router processes (each rebuilds its consent state from
    the audit log), as many rounds as it takes on a loaded machine (a round ends when
    its router is idle, which a slow group join can make it before it polled)."""
    routed: list[Routed] = []
    clock = SystemClock()
    deadline = time.monotonic() + 90
    while {e["event_id"] for e in events} - {r.event_id for r in routed}:
        assert time.monotonic() < deadline, "the router did not route every event"
        service = build_service(
            s, secured.bootstrap, clock=clock, instance_id=f"consent-{uuid4().hex[:6]}",
            core=build_core(s, clock=clock, codec=CODEC), on_batch=routed.extend,
            client_config={"credentials": secured.creds(acl.ROUTER)},
        )
        try:
            service.run(idle_exit_s=1.5)
        finally:
            service.close()
    return routed


def _decisions(routed: list[Routed], event: dict[str, Any]) -> dict[str, Any]:
    [r] = [r for r in routed if r.event_id == event["event_id"]]
    return {"shared": sorted(r.shared), "withheld": sorted(r.withheld)}


def test_a_school_cannot_give_or_withdraw_consent_for_a_child(
    secured: Secured, env: tuple[config.Settings, Any]
) -> None:
    s, signers = env
    t = s.topics
    # Kafka refuses the school's write to the return-home service's consent topic.
    with make_producer(
        secured.bootstrap, credentials=secured.creds(acl.agency_user(SCHOOL)), max_block_ms=10_000,
    ) as p, pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
        p.send(t.consent(RHI), b"forged", key=CHILD.encode()).get(timeout=10)

    before = _concern()
    _publish(secured, s, signers, SCHOOL, before)
    baseline = _decisions(_route(secured, s, before), before)
    assert "torbay-mash" not in baseline["shared"]
    assert ("torbay-mash", "OVERRIDE_NO_REASON") in baseline["withheld"]

    # The school, signing with its own key, records GIVEN for a child it never met, and
    # a record in the service's name on its own topic (signed by the school: the
    # service's key never left the service).
    forged_given = _consent(SCHOOL, "GIVEN")
    in_their_name = _consent(SCHOOL, "GIVEN", source=RHI)
    _publish(secured, s, signers, SCHOOL, forged_given)
    raw = AgencySigner(RHI, signers[SCHOOL].private_key)
    with Publisher(
        bootstrap=secured.bootstrap, agency=RHI, topics=t, codec=CODEC, signer=raw,
        producer_config={"credentials": secured.creds(acl.agency_user(SCHOOL))},
    ) as pub:
        data = pub.encode(CODEC.from_json(in_their_name))
    with make_producer(
        secured.bootstrap, credentials=secured.creds(acl.agency_user(SCHOOL))
    ) as p:
        p.send(t.consent(SCHOOL), data, key=CHILD.encode()).get(timeout=30)
    quarantined = {
        r.event_id: r.quarantined for r in _route(secured, s, forged_given, in_their_name)
    }
    assert quarantined == {
        forged_given["event_id"]: "NOT_ENTITLED", in_their_name["event_id"]: "AGENCY_MISMATCH"
    }
    after_given = _concern()
    _publish(secured, s, signers, SCHOOL, after_given)
    assert _decisions(_route(secured, s, after_given), after_given) == baseline

    # The service records consent: the next concern reaches the MASH on consent ...
    given = _consent(RHI, "GIVEN")
    _publish(secured, s, signers, RHI, given)
    assert [r.quarantined for r in _route(secured, s, given)] == [None]
    on_consent = _concern()
    _publish(secured, s, signers, SCHOOL, on_consent)
    shared = _decisions(_route(secured, s, on_consent), on_consent)
    assert "torbay-mash" in shared["shared"]

    # ... and the school's forged withdrawal does not stop it.
    forged_withdrawal = _consent(SCHOOL, "WITHDRAWN")
    _publish(secured, s, signers, SCHOOL, forged_withdrawal)
    assert [r.quarantined for r in _route(secured, s, forged_withdrawal)] == ["NOT_ENTITLED"]
    after_withdrawal = _concern()
    _publish(secured, s, signers, SCHOOL, after_withdrawal)
    assert _decisions(_route(secured, s, after_withdrawal), after_withdrawal) == shared

    # The audit log, checkpointed by the checkpointer, read and verified by the auditor:
    # every forged record quarantined with its reason, the service's record the only
    # CONSENT leaf, and the shares citing it.
    with pytest.MonkeyPatch.context() as mp:
        def login_as(user: str) -> None:
            mp.setenv("SAFESHARE_SECURITY_PROTOCOL", "SASL_SSL")
            mp.setenv("SAFESHARE_SASL_USERNAME", user)
            mp.setenv("SAFESHARE_SASL_PASSWORD_FILE", str(secured.local.passwords.path(user)))
            mp.setenv("SAFESHARE_SSL_CAFILE", str(secured.local.tls.ca_cert))

        login_as(acl.CHECKPOINTER)
        cp = Checkpointer.from_settings(s, secured.bootstrap, clock=SystemClock())
        try:
            cp.run_once()
            anchor = cp.signer.vkey
        finally:
            cp.close()
        login_as(acl.AUDITOR)
        bundle = read_log(secured.bootstrap, t)
    leaves = list(verify_bundle(bundle, [anchor]).leaves)
    by_event = {(lf.event_id, lf.kind): lf for lf in leaves}
    for event, reason in ((forged_given, "NOT_ENTITLED"), (in_their_name, "AGENCY_MISMATCH"),
                          (forged_withdrawal, "NOT_ENTITLED")):
        assert by_event[(event["event_id"], LeafKind.QUARANTINED)].reason == reason
    consent_leaves = [lf for lf in leaves if lf.kind is LeafKind.CONSENT]
    assert [(lf.event_id, lf.outcome, lf.source_agency) for lf in consent_leaves] == [
        (given["event_id"], "GIVEN", RHI)
    ]
    mash = [lf for lf in leaves if lf.event_id in (on_consent["event_id"],
            after_withdrawal["event_id"]) and lf.recipient == "torbay-mash"]
    assert [(lf.kind, lf.consent_ref) for lf in mash] == [
        (LeafKind.SHARED, given["event_id"])
    ] * 2

    # who-saw: the child's consent history, and the record each share relied on.
    key = (s.home / "keys" / SUBJECT_KEY_FILE).read_bytes()
    sightings = who_saw(
        bundle, subject_pseudonym(key, CHILD), 0, 2**53, trusted_vkeys=[anchor],
        kinds=SUBJECT_HISTORY,
    )
    assert [x.leaf.event_id for x in sightings if x.leaf.kind is LeafKind.CONSENT] == [
        given["event_id"]
    ]
    relied = {
        x.leaf.event_id: [c.leaf.event_id for c in x.relied_on]
        for x in sightings if x.leaf.kind is LeafKind.SHARED and x.leaf.recipient == "torbay-mash"
    }
    assert relied == {
        on_consent["event_id"]: [given["event_id"]],
        after_withdrawal["event_id"]: [given["event_id"]],
    }
