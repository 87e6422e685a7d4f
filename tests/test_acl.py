"""Who may touch what, enforced by Kafka itself: tests on a real secured broker.

One secure local broker for this module (its own temp instance dir, its own
CA and passwords): SASL_SSL with SCRAM-SHA-512, ``StandardAuthorizer``,
``allow.everyone.if.no.acl.found=false``. Every principal of the example
policy gets a SCRAM login; the ACLs are applied exactly as ``safeshare acl
apply`` does. Then each test logs in as someone and shows what Kafka lets
that principal do, and what it refuses.
"""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from broker import config
from broker.kafka import acl
from broker.kafka.admin import AclBinding, Admin
from broker.kafka.configuration import standard_topic_specs
from broker.kafka.consumer import Consumer, make_consumer
from broker.kafka.exceptions import KafkaError
from broker.kafka.local import probe_broker
from broker.kafka.producer import make_producer
from broker.kafka.security import PLAINTEXT, Credentials
from broker.kafka.structs import TopicPartition, offsets_after
from broker.topics import Topics
from tests.secured import EXAMPLE, Secured

pytestmark = pytest.mark.kafka

DENIED_S = 10.0  # how long a refused operation may take to report itself


def _assigned(consumer: Consumer, topic: str) -> Consumer:
    consumer.assign([TopicPartition(topic, 0)])
    consumer.seek_to_beginning(TopicPartition(topic, 0))
    return consumer


def _read(env: Secured, user: str, topic: str, *, count: int) -> list[bytes]:
    """Read ``count`` records of ``topic`` (partition 0) as ``user``, without a group."""
    with make_consumer(env.bootstrap, group_id=None, credentials=env.creds(user)) as c:
        return [r.value or b"" for r in _assigned(c, topic).collect(count, timeout_s=20)]


# -- who gets in -------------------------------------------------------------------------------
def test_the_broker_speaks_only_sasl_ssl_and_acls_are_in_force(secured: Secured) -> None:
    assert secured.applied.create and not secured.applied.delete
    assert probe_broker(secured.bootstrap, 10, credentials=secured.creds("admin")) is None
    with Admin(secured.bootstrap, credentials=secured.creds("admin")) as admin:
        assert acl.policy_acls(secured.policy, secured.topics) <= admin.describe_acls()


def test_an_unauthenticated_client_cannot_connect(secured: Secured) -> None:
    why = probe_broker(secured.bootstrap, 2, credentials=PLAINTEXT)
    assert why is not None  # a plaintext client cannot even speak to a TLS listener
    with pytest.raises(KafkaError, match="Unable to bootstrap"):
        Admin(secured.bootstrap, credentials=PLAINTEXT, timeout_s=2)


def test_a_wrong_password_or_unknown_user_cannot_connect(secured: Secured) -> None:
    router = secured.creds("router")
    # The broker answers a bad SCRAM proof with an error and closes the
    # connection; kafka-python sometimes sees only the close. Either way the
    # client gets no session, and never a different kind of failure.
    refused = r"refused the login: .*Authentication failed|Unable to bootstrap"
    for creds in (router.as_user("router", "not-the-password"),
                  router.as_user("agency-nobody", "whatever")):
        why = probe_broker(secured.bootstrap, 2, credentials=creds)
        assert why is not None and re.search(refused, why), why
        with pytest.raises(KafkaError, match=refused):
            make_producer(secured.bootstrap, credentials=creds, bootstrap_timeout_ms=2000)


def test_a_client_that_does_not_trust_the_local_ca_is_refused(secured: Secured) -> None:
    """Without the project's CA the broker's certificate does not verify (no MITM)."""
    untrusting = Credentials(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
        username="router", password=secured.creds("router").password,
    )
    why = probe_broker(secured.bootstrap, 2, credentials=untrusting)
    assert why is not None and "Unable to bootstrap" in why, why


# -- agencies --------------------------------------------------------------------------------
def test_an_agency_writes_its_own_ingest_and_consent_topics(secured: Secured) -> None:
    a = secured.agencies[0]
    t = secured.topics
    with make_producer(secured.bootstrap, credentials=secured.creds(acl.agency_user(a))) as p:
        assert p.send(t.ingest(a), b"concern", key=b"subject").get().offset >= 0
        assert p.send(t.consent(a), b"consent", key=b"subject:SAFEGUARDING").get().offset >= 0


@pytest.mark.parametrize("kind", ["ingest", "consent"])
def test_an_agency_cannot_write_another_agencys_topic(secured: Secured, kind: str) -> None:
    """Not its events, and not its consent records: a school cannot record consent in
    the name of the return-home service on the service's consent topic."""
    a, b = "example-academy", "safe-return-charity"
    topic = getattr(secured.topics, kind)(b)
    with make_producer(
        secured.bootstrap, credentials=secured.creds(acl.agency_user(a)),
        max_block_ms=int(DENIED_S * 1000),
    ) as p, pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
        p.send(topic, b"forged", key=b"subject").get(timeout=DENIED_S)


def test_an_agency_cannot_read_anything(secured: Secured) -> None:
    a = secured.agencies[0]
    user = acl.agency_user(a)
    for topic in (secured.topics.ingest(a), secured.topics.consent(a),
                  secured.topics.feed(secured.subscribers[0]), secured.topics.audit):
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            _read(secured, user, topic, count=1)


# -- only the router writes feeds and the audit log ----------------------------------------------
@pytest.mark.parametrize(
    ("who", "where"),
    [
        (who, where)
        for who in ("agency", "subscriber", "checkpointer", "auditor", "witness", "operator")
        for where in ("feed", "audit", "quarantine")
        if (who, where) != ("checkpointer", "audit")  # key-rotation leaves (acl.py)
    ],
)
def test_nobody_but_the_router_writes_a_feed_or_the_audit_log(
    secured: Secured, who: str, where: str
) -> None:
    user = {
        "agency": acl.agency_user(secured.agencies[0]),
        "subscriber": acl.subscriber_user(secured.subscribers[0]),
    }.get(who, who)
    topic = {
        "feed": secured.topics.feed(secured.subscribers[0]),
        "audit": secured.topics.audit,
        "quarantine": secured.topics.quarantine,
    }[where]
    # Refused at the topic; or, for a principal that may write no topic at
    # all but may see this one, already refused the idempotent producer id
    # (no IDEMPOTENT_WRITE on the cluster, and no WRITE anywhere: KIP-679).
    refusal = "TopicAuthorizationFailed"
    if who in {"subscriber", "auditor", "operator"}:
        refusal += "|ClusterAuthorizationFailed"
    with make_producer(
        secured.bootstrap, credentials=secured.creds(user), max_block_ms=int(DENIED_S * 1000)
    ) as p, pytest.raises(KafkaError, match=refusal):
        p.send(topic, b"forged").get(timeout=DENIED_S)


def test_only_the_router_may_use_router_transactional_ids(secured: Secured) -> None:
    user = acl.agency_user(secured.agencies[0])
    with make_producer(
        secured.bootstrap, credentials=secured.creds(user),
        transactional_id=secured.topics.router_transactional_id("impostor"),
        max_block_ms=int(DENIED_S * 1000),
    ) as p, pytest.raises(KafkaError, match="TransactionalIdAuthorizationFailed"):
        p.init_transactions()


# -- the router's path, end to end ---------------------------------------------------------------
def test_router_moves_ingest_to_feed_and_audit_in_one_transaction(secured: Secured) -> None:
    """Agency publishes; the router consumes it in its group and writes the feed
    copy, the audit leaf and its offsets in one transaction; the subscriber
    reads its feed in its own group; the auditor reads the audit leaf."""
    t = secured.topics
    agency, sub = secured.agencies[1], secured.subscribers[1]
    marker = uuid4().hex.encode()
    with make_producer(secured.bootstrap, credentials=secured.creds(acl.agency_user(agency))) as p:
        p.send(t.ingest(agency), b"event-" + marker, key=b"s1").get()

    router = secured.creds(acl.ROUTER)
    with make_consumer(
        secured.bootstrap, group_id=t.router_group, pattern=t.ingest_pattern, credentials=router,
    ) as consumer, make_producer(
        secured.bootstrap, transactional_id=t.router_transactional_id("r1"), credentials=router,
    ) as producer:
        producer.init_transactions()
        got = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(marker in (r.value or b"") for r in got):
            got += consumer.poll_records(timeout_ms=500)
        mine = [r for r in got if marker in (r.value or b"")]
        assert mine, "the router did not receive the agency's event"
        with producer.transaction():
            producer.send(t.feed(sub), b"copy-" + marker, key=b"s1")
            producer.send(t.audit, b"leaf-" + marker)
            producer.send_offsets_to_transaction(offsets_after(got), consumer.group_metadata())
        assert consumer.committed(TopicPartition(t.ingest(agency), 0)) == mine[-1].offset + 1

    with make_consumer(
        secured.bootstrap, group_id=t.feed_group(sub), topics=[t.feed(sub)],
        credentials=secured.creds(acl.subscriber_user(sub)),
    ) as reader:
        values = [r.value for r in reader.collect(1, timeout_s=30)]
        assert b"copy-" + marker in values
        reader.commit()
    assert b"leaf-" + marker in _read(secured, acl.AUDITOR, t.audit, count=1)


def test_the_router_cannot_read_a_feed_or_forge_an_agencys_event(secured: Secured) -> None:
    t = secured.topics
    with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
        _read(secured, acl.ROUTER, t.feed(secured.subscribers[0]), count=1)
    with make_producer(
        secured.bootstrap, credentials=secured.creds(acl.ROUTER),
        max_block_ms=int(DENIED_S * 1000),
    ) as p, pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
        p.send(t.ingest(secured.agencies[0]), b"forged").get(timeout=DENIED_S)


# -- subscribers and auditors ----------------------------------------------------------------------
def test_a_subscriber_reads_its_own_feed_but_not_anothers(secured: Secured) -> None:
    t = secured.topics
    s1, s2 = secured.subscribers[:2]
    user = acl.subscriber_user(s1)
    marker = uuid4().hex.encode()
    with make_producer(secured.bootstrap, credentials=secured.creds(acl.ROUTER)) as p:
        p.send(t.feed(s1), b"mine-" + marker).get()
        p.send(t.feed(s2), b"theirs-" + marker).get()
    assert b"mine-" + marker in _read(secured, user, t.feed(s1), count=1)
    with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
        _read(secured, user, t.feed(s2), count=1)


def test_a_subscriber_cannot_join_anothers_group(secured: Secured) -> None:
    t = secured.topics
    s1, s2 = secured.subscribers[:2]
    with make_consumer(
        secured.bootstrap, group_id=t.feed_group(s2), topics=[t.feed(s1)],
        credentials=secured.creds(acl.subscriber_user(s1)),
    ) as c, pytest.raises(KafkaError, match="GroupAuthorizationFailed"):
        deadline = time.monotonic() + DENIED_S
        while time.monotonic() < deadline:
            c.poll_records(timeout_ms=500)


def test_a_subscriber_may_tail_its_feed_in_a_derived_group(secured: Secured) -> None:
    """``safeshare feed tail`` reads in ``<feed group>.tail.<n>``: the prefixed ACL allows it."""
    t = secured.topics
    s1 = secured.subscribers[2]
    marker = uuid4().hex.encode()
    with make_producer(secured.bootstrap, credentials=secured.creds(acl.ROUTER)) as p:
        p.send(t.feed(s1), b"tail-" + marker).get()
    with make_consumer(
        secured.bootstrap, group_id=f"{t.feed_group(s1)}.tail.{time.time_ns()}",
        topics=[t.feed(s1)], credentials=secured.creds(acl.subscriber_user(s1)),
    ) as c:
        assert b"tail-" + marker in [r.value for r in c.collect(1, timeout_s=30)]
        c.commit()


def test_the_auditor_reads_only_the_audit_topics(secured: Secured) -> None:
    t = secured.topics
    with make_producer(secured.bootstrap, credentials=secured.creds(acl.CHECKPOINTER)) as p:
        p.send(t.audit_checkpoints, b"checkpoint").get()
    assert b"checkpoint" in _read(secured, acl.AUDITOR, t.audit_checkpoints, count=1)
    for topic in (t.feed(secured.subscribers[0]), t.ingest(secured.agencies[0]),
                  t.consent(secured.agencies[0]), t.quarantine):
        with pytest.raises(KafkaError, match="TopicAuthorizationFailed"):
            _read(secured, acl.AUDITOR, topic, count=1)


# -- apply on the cluster ------------------------------------------------------------------------
def test_apply_is_idempotent_removes_stale_and_keeps_foreign_acls(secured: Secured) -> None:
    t = secured.topics
    desired = acl.policy_acls(secured.policy, t)
    s1, s2 = secured.subscribers[:2]
    user = acl.subscriber_user(s1)
    stale = AclBinding(f"User:{user}", "TOPIC", t.feed(s2), "READ")
    foreign = AclBinding("User:someone-else", "TOPIC", t.feed(s2), "READ")
    marker = uuid4().hex.encode()
    with Admin(secured.bootstrap, credentials=secured.creds("admin")) as admin:
        assert acl.apply(admin, desired, t).empty
        admin.create_acls([stale, foreign])
        with make_producer(secured.bootstrap, credentials=secured.creds(acl.ROUTER)) as p:
            p.send(t.feed(s2), b"leak-" + marker).get()
        # The stray grant works (Kafka enforces whatever ACLs say) ...
        assert b"leak-" + marker in _read(secured, user, t.feed(s2), count=1)

        dry = acl.apply(admin, desired, t, dry_run=True)
        assert dry.delete == (stale,) and not dry.create
        assert stale in admin.describe_acls()  # a dry run changes nothing
        assert acl.apply(admin, desired, t).delete == (stale,)
        now = admin.describe_acls()
        assert stale not in now and foreign in now and desired <= now
        admin.delete_acls([foreign])
    # ... and is gone once apply has run: the policy is the source of truth.
    deadline = time.monotonic() + DENIED_S
    while True:  # the broker's authorizer applies the metadata change asynchronously
        try:
            _read(secured, user, t.feed(s2), count=1)
        except KafkaError as exc:
            assert "TopicAuthorizationFailed" in str(exc)
            break
        assert time.monotonic() < deadline, "the stale ACL still grants access"


def test_local_secrets_are_private(secured: Secured) -> None:
    files = [secured.local.tls.ca_key, secured.local.tls.broker_keystore,
             secured.local.properties_path]
    files += [secured.local.passwords.path(u) for u in ("admin", "broker", acl.ROUTER)]
    for f in files:
        assert Path(f).stat().st_mode & 0o077 == 0, f
    props = secured.local.properties_path.read_text()
    assert "allow.everyone.if.no.acl.found=false" in props
    assert "org.apache.kafka.metadata.authorizer.StandardAuthorizer" in props
    assert secured.creds("admin").password not in props  # only the broker's own login is there


# -- the real services, each as its own principal --------------------------------------------------
def test_the_real_services_run_with_exactly_these_acls(
    secured: Secured, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Publisher, RouterService, FeedReader, Checkpointer and the auditor's
    read_log, each logged in as its own principal: the derived ACLs are
    enough for the code as it is (not just for hand-written clients), and
    the auditor verifies what the checkpointer signed."""
    from broker.api import FeedReader, Publisher
    from broker.audit.checkpointer import Checkpointer
    from broker.audit.stream import read_log
    from broker.audit.verify import verify_bundle
    from broker.clock import SystemClock
    from broker.routing.app import build_core, build_service
    from tests.helpers import CODEC, example

    # A namespace of its own (the tests above wrote junk to the module's), with
    # its topics and ACLs applied beside the module's, which stay as they were.
    t = Topics(f"t{uuid4().hex[:10]}")
    with Admin(secured.bootstrap, credentials=secured.creds("admin")) as admin:
        admin.ensure_topics(standard_topic_specs(
            t, secured.agencies, secured.subscribers, partitions=1
        ))
        before = admin.describe_acls()
        acl.apply(admin, acl.policy_acls(secured.policy, t), t)
        assert before <= admin.describe_acls()
        assert acl.plan(acl.policy_acls(secured.policy, secured.topics),
                        admin.describe_acls(), secured.topics).empty
    s = replace(config.load({}), namespace=t.namespace, home=tmp_path)
    event = example("missing_episode")
    agency = event["source"]["agency_id"]
    with Publisher(
        bootstrap=secured.bootstrap, agency=agency, topics=t, codec=CODEC,
        producer_config={"credentials": secured.creds(acl.agency_user(agency))},
    ) as pub:
        pub.publish_json(event)

    routed: list[Any] = []
    clock = SystemClock()
    service = build_service(
        s, secured.bootstrap, clock=clock, instance_id="acl-test",
        core=build_core(s, clock=clock, codec=CODEC), on_batch=routed.extend,
        client_config={"credentials": secured.creds(acl.ROUTER)},
    )
    try:
        service.run(idle_exit_s=2.0)
    finally:
        service.close()
    shared_with = {sub for r in routed if r.event_id == event["event_id"] for sub in r.shared}
    assert "torbay-mash" in shared_with, routed

    with FeedReader(
        bootstrap=secured.bootstrap, subscriber="torbay-mash", topics=t, codec=CODEC,
        consumer_config={"credentials": secured.creds(acl.subscriber_user("torbay-mash"))},
    ) as feed:
        items = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not items:
            items = [i for i in feed.poll(500)
                     if i.record["event"]["event_id"] == event["event_id"]]
        assert items, "torbay-mash did not receive the shared event"
        feed.commit()

    # Services without a credentials parameter take theirs from the environment.
    def login_as(user: str) -> None:
        monkeypatch.setenv("SAFESHARE_SECURITY_PROTOCOL", "SASL_SSL")
        monkeypatch.setenv("SAFESHARE_SASL_USERNAME", user)
        monkeypatch.setenv(
            "SAFESHARE_SASL_PASSWORD_FILE", str(secured.local.passwords.path(user))
        )
        monkeypatch.setenv("SAFESHARE_SSL_CAFILE", str(secured.local.tls.ca_cert))

    login_as(acl.CHECKPOINTER)
    cp = Checkpointer.from_settings(s, secured.bootstrap, clock=clock)
    try:
        published = cp.run_once()
        anchor = cp.signer.vkey
    finally:
        cp.close()
    assert published.checkpoint.size >= len(secured.policy.subscribers)

    login_as(acl.AUDITOR)
    bundle = read_log(secured.bootstrap, t)
    assert len(bundle.leaves) == published.checkpoint.size
    verify_bundle(bundle, [anchor])


# -- the command line -----------------------------------------------------------------------------
def test_safeshare_acl_apply_shows_the_diff_then_applies_it(secured: Secured) -> None:
    from click.testing import CliRunner

    from broker.cli.acl import acl as acl_cli

    t = secured.topics
    local = secured.local
    env = {
        "SAFESHARE_NAMESPACE": t.namespace,
        "SAFESHARE_POLICY": str(EXAMPLE),
        "SAFESHARE_SECURITY_PROTOCOL": "SASL_SSL",
        "SAFESHARE_SASL_USERNAME": "admin",
        "SAFESHARE_SASL_PASSWORD_FILE": str(local.passwords.path("admin")),
        "SAFESHARE_SSL_CAFILE": str(local.tls.ca_cert),
    }
    stale = AclBinding("User:auditor", "TOPIC", t.feed(secured.subscribers[0]), "READ")
    with Admin(secured.bootstrap, credentials=secured.creds("admin")) as admin:
        admin.create_acls([stale])
    runner = CliRunner()
    args = ["apply", "--bootstrap", secured.bootstrap]

    deadline = time.monotonic() + DENIED_S
    while True:  # until the broker shows the stray binding
        dry = runner.invoke(acl_cli, [*args, "--dry-run"], env=env)
        assert dry.exit_code == 0, dry.output
        if f"- {stale}" in dry.output or time.monotonic() > deadline:
            break
    assert f"- {stale}" in dry.output
    assert "would change: 0 to create, 1 to delete" in dry.output

    done = runner.invoke(acl_cli, args, env=env)
    assert done.exit_code == 0, done.output
    assert "applied: 0 to create, 1 to delete" in done.output
    again = runner.invoke(acl_cli, [*args, "--dry-run"], env=env)
    assert "would change: 0 to create, 0 to delete" in again.output

    # Without the admin's credentials the broker refuses to show or change ACLs.
    as_router = {**env, "SAFESHARE_SASL_USERNAME": acl.ROUTER,
                 "SAFESHARE_SASL_PASSWORD_FILE": str(local.passwords.path(acl.ROUTER))}
    refused = runner.invoke(acl_cli, args, env=as_router)
    assert refused.exit_code != 0
    assert "ClusterAuthorizationFailed" in str(refused.exception) + refused.output
