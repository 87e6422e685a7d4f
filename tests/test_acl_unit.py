"""Unit tests of the ACL derivation and diff, and of client credentials (no broker).

The integration tests in ``test_acl.py`` show Kafka enforcing these ACLs;
here the pure parts are pinned down: which bindings the policy implies,
which ones never appear, and what ``plan`` creates, deletes and leaves alone.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from broker import config
from broker.errors import ConfigError
from broker.kafka import acl
from broker.kafka.admin import AclBinding
from broker.kafka.security import (
    PLAINTEXT,
    Credentials,
    PasswordStore,
    ensure_local_tls,
    from_settings,
    scram_add_argument,
)
from broker.policy import Policy
from broker.topics import Topics

T = Topics("ns")
EXAMPLE = config.PROJECT_ROOT / "deploy" / "policy" / "example-mash.yaml"


def _b(principal: str, rtype: str, name: str, op: str, pattern: str = "LITERAL") -> AclBinding:
    return AclBinding(principal, rtype, name, op, pattern)


def _of(bindings: frozenset[AclBinding], user: str) -> set[tuple[str, str, str, str]]:
    return {
        (b.resource_type, b.resource_name, b.operation, b.pattern)
        for b in bindings
        if b.principal == f"User:{user}"
    }


@pytest.fixture(scope="module")
def derived() -> frozenset[AclBinding]:
    return acl.desired_acls(T, ["police", "school"], ["mash", "mash-b"])


# -- derivation ----------------------------------------------------------------------------
def test_agency_may_write_only_its_own_ingest_and_consent_topics(
    derived: frozenset[AclBinding],
) -> None:
    assert _of(derived, "agency-police") == {
        ("TOPIC", "ns.ingest.police", "WRITE", "LITERAL"),
        ("TOPIC", "ns.consent.police", "WRITE", "LITERAL"),
        ("TOPIC", "ns.status.police", "READ", "LITERAL"),
    }
    # Nobody but the school (and the gateway, for the school it authenticated)
    # writes the school's consent topic.
    assert {
        b.principal for b in derived if b.resource_name == "ns.consent.school"
    } == {"User:agency-school", "User:gateway"}


def test_the_old_shared_consent_topic_acl_is_stale_and_removed() -> None:
    """A deployment upgraded from one shared consent topic loses those grants at apply."""
    derived = acl.desired_acls(T, ["police"], [])
    old = AclBinding("User:agency-police", "TOPIC", "ns.consent", "WRITE", "LITERAL")
    assert acl.in_scope(old, T)
    assert acl.plan(derived, {old}, T).delete == (old,)


def test_subscriber_may_read_only_its_feed_with_its_own_groups(
    derived: frozenset[AclBinding],
) -> None:
    assert _of(derived, "subscriber-mash") == {
        ("TOPIC", "ns.feed.mash", "READ", "LITERAL"),
        ("GROUP", "ns.subscriber.mash", "READ", "LITERAL"),
        ("GROUP", "ns.subscriber.mash.", "READ", "PREFIXED"),
        ("TOPIC", "ns.ack.mash", "WRITE", "LITERAL"),
        ("TOPIC", "ns.notices.mash", "READ", "LITERAL"),
        # Its people's link/unlink decisions (and reading them back), its review items.
        ("TOPIC", "ns.identity-decisions.mash", "WRITE", "LITERAL"),
        ("TOPIC", "ns.identity-decisions.mash", "READ", "LITERAL"),
        ("TOPIC", "ns.identity-reviews.mash", "READ", "LITERAL"),
    }


def test_only_a_subscriber_decides_on_its_own_topic_and_only_the_router_raises_reviews(
    derived: frozenset[AclBinding],
) -> None:
    """Kafka itself stops one subscriber linking children in another's name."""
    def who(op: str, topic: str) -> set[str]:
        return {b.principal for b in derived if b.operation == op and b.resource_type == "TOPIC"
                and (b.resource_name == topic
                     or (b.pattern == "PREFIXED" and topic.startswith(b.resource_name)))}

    assert who("WRITE", T.identity_decisions("mash")) == {"User:subscriber-mash"}
    assert who("READ", T.identity_decisions("mash")) == {"User:subscriber-mash", "User:router"}
    assert who("WRITE", T.identity_reviews("mash")) == {"User:router"}
    assert who("READ", T.identity_reviews("mash")) == {"User:subscriber-mash"}
    assert all(acl.in_scope(b, T) for b in derived)


def test_only_a_subscriber_acknowledges_for_itself_and_the_loop_reads_it(
    derived: frozenset[AclBinding],
) -> None:
    ack_writers = {b.principal for b in derived if b.operation == "WRITE"
                   and b.resource_type == "TOPIC" and b.resource_name == T.acks("mash")}
    # ...and the gateway, for a subscriber it authenticated (POST .../acks).
    assert ack_writers == {"User:subscriber-mash", "User:gateway"}
    loop = _of(derived, "loop")
    assert ("TOPIC", "ns.ack.", "READ", "PREFIXED") in loop
    assert ("TOPIC", "ns.loop.clocks", "WRITE", "LITERAL") in loop
    assert ("TRANSACTIONAL_ID", "ns.loop.", "WRITE", "PREFIXED") in loop
    # The loop never reads a feed or an ingest topic: it sees clocks, not concerns.
    assert not {r for r in loop if r[1].startswith(("ns.feed", "ns.ingest", "ns.consent"))}
    assert ("TOPIC", "ns.loop.clock-starts", "WRITE", "LITERAL") in _of(derived, "router")


def test_subscriber_group_prefix_does_not_reach_a_longer_id(
    derived: frozenset[AclBinding],
) -> None:
    """``mash`` must not get the groups of ``mash-b`` (a bare prefix would give them)."""
    groups = [
        b for b in derived if b.principal == "User:subscriber-mash" and b.resource_type == "GROUP"
    ]
    other = T.feed_group("mash-b")
    for g in groups:
        matches = (
            other.startswith(g.resource_name)
            if g.pattern == "PREFIXED"
            else other == g.resource_name
        )
        assert not matches, g
    # ...while the subscriber's own derived groups (feed tail) are covered.
    tail = T.feed_group("mash") + ".tail.123"
    assert any(g.pattern == "PREFIXED" and tail.startswith(g.resource_name) for g in groups)


def test_only_the_router_writes_feeds_audit_and_quarantine(
    derived: frozenset[AclBinding],
) -> None:
    def writers(*names: str) -> set[str]:
        return {
            b.principal for b in derived
            if b.operation == "WRITE" and b.resource_type == "TOPIC" and b.resource_name in names
        }

    assert writers(T.feed_prefix, T.feed("mash"), T.feed("mash-b")) == {"User:router"}
    assert writers(T.quarantine, T.clocks, T.clock_starts, T.audit_checkpoints).isdisjoint(
        {"User:gateway"})
    # The loop service quarantines a malformed or misdirected acknowledgement.
    assert writers(T.quarantine) == {"User:router", "User:loop"}
    # The checkpointer appends only the leaf of a key rotation (rotate_key).
    # The loop service's leaves: acknowledgements, escalations, status notices.
    # The gateway's: consultations (CONSULTED), workspace notices (NOTIFIED).
    assert writers(T.audit) == {"User:router", "User:checkpointer", "User:loop", "User:gateway"}


def test_router_reads_ingest_and_consent_and_owns_its_group_and_transactions(
    derived: frozenset[AclBinding],
) -> None:
    router = _of(derived, "router")
    assert ("TOPIC", "ns.ingest.", "READ", "PREFIXED") in router
    assert ("TOPIC", "ns.consent.", "READ", "PREFIXED") in router
    assert ("TOPIC", "ns.audit", "READ", "LITERAL") in router
    assert ("TOPIC", "ns.audit.checkpoints", "READ", "LITERAL") in router
    assert ("GROUP", "ns.router", "READ", "LITERAL") in router
    assert ("TRANSACTIONAL_ID", "ns.router.", "WRITE", "PREFIXED") in router
    assert ("TOPIC", "ns.feed.", "WRITE", "PREFIXED") in router
    # The router never reads a feed and never writes an ingest topic or consent.
    assert not {r for r in router if r[1].startswith("ns.feed") and r[2] == "READ"}
    assert not {r for r in router if r[1].startswith(("ns.ingest", "ns.consent"))
                and r[2] == "WRITE"}


def test_auditor_reads_only_the_audit_topics(derived: frozenset[AclBinding]) -> None:
    assert _of(derived, "auditor") == {
        ("TOPIC", "ns.audit", "READ", "LITERAL"),
        ("TOPIC", "ns.audit.checkpoints", "READ", "LITERAL"),
    }


def test_checkpointer_writes_checkpoints_transactionally(derived: frozenset[AclBinding]) -> None:
    assert _of(derived, "checkpointer") == {
        ("TOPIC", "ns.audit", "READ", "LITERAL"),
        ("TOPIC", "ns.audit.checkpoints", "READ", "LITERAL"),
        ("TOPIC", "ns.audit.checkpoints", "WRITE", "LITERAL"),
        ("TOPIC", "ns.audit", "WRITE", "LITERAL"),
        ("TRANSACTIONAL_ID", "ns.checkpointer.", "WRITE", "PREFIXED"),
    }


def test_nothing_is_granted_on_the_cluster_or_denied_or_to_all(
    derived: frozenset[AclBinding],
) -> None:
    assert all(b.resource_type != "CLUSTER" for b in derived)
    assert all(b.permission == "ALLOW" and b.host == "*" for b in derived)
    assert all(b.operation in {"READ", "WRITE"} for b in derived)
    assert all(acl.is_safeshare_principal(b.principal) for b in derived)


def test_policy_acls_follow_the_registry() -> None:
    policy = Policy.load(EXAMPLE)
    got = acl.policy_acls(policy, T)
    for a in policy.agencies:
        assert _b(f"User:agency-{a.id}", "TOPIC", T.ingest(a.id), "WRITE") in got
    for s in policy.subscribers:
        assert _b(f"User:subscriber-{s.id}", "TOPIC", T.feed(s.id), "READ") in got
    users = acl.policy_users(policy)
    assert len(users) == len(policy.agencies) + len(policy.subscribers) + len(acl.SERVICE_USERS)
    assert {b.principal for b in got} == {f"User:{u}" for u in users}


def test_principal_names() -> None:
    assert acl.is_safeshare_principal("User:agency-devon-cornwall-police")
    assert acl.is_safeshare_principal("User:router")
    for other in ("User:admin", "User:broker", "User:CN=safeshare-local-broker",
                  "User:routers", "User:agency-", "Group:router", "User:agency-A"):
        assert not acl.is_safeshare_principal(other), other
    with pytest.raises(ValueError):
        acl.agency_user("Not.An.Id")


# -- diff ------------------------------------------------------------------------------------
def test_plan_creates_missing_and_deletes_stale_safeshare_acls(
    derived: frozenset[AclBinding],
) -> None:
    have = set(list(sorted(derived))[: len(derived) // 2])
    stale = _b("User:subscriber-mash", "TOPIC", "ns.feed.mash-b", "READ")  # reads another feed
    gone = _b("User:agency-retired", "TOPIC", "ns.ingest.retired", "WRITE")  # left the policy
    cluster_wide = _b("User:router", "CLUSTER", "kafka-cluster", "IDEMPOTENT_WRITE")
    have |= {stale, gone, cluster_wide}
    p = acl.plan(derived, have, T)
    assert set(p.create) == set(derived) - have
    assert set(p.delete) == {stale, gone, cluster_wide}
    assert p.unchanged == len(derived) // 2
    assert f"- {stale}" in p.lines()


def test_plan_leaves_other_principals_and_namespaces_alone(
    derived: frozenset[AclBinding],
) -> None:
    foreign = {
        _b("User:admin", "TOPIC", "ns.feed.mash", "READ"),  # not a Safeshare principal
        _b("User:someone", "TOPIC", "ns.audit", "READ"),
        _b("User:router", "TOPIC", "ns.x.feed.", "WRITE", "PREFIXED"),  # namespace ns.x
        _b("User:router", "TOPIC", "other.feed.", "WRITE", "PREFIXED"),
        _b("User:subscriber-mash", "GROUP", "elsewhere", "READ"),
    }
    p = acl.plan(derived, set(derived) | foreign, T)
    assert p.empty and p.unchanged == len(derived)
    assert p.summary() == f"0 to create, 0 to delete, {len(derived)} unchanged"


def test_plan_is_idempotent(derived: frozenset[AclBinding]) -> None:
    first = acl.plan(derived, set(), T)
    assert len(first.create) == len(derived) and not first.delete
    assert acl.plan(derived, set(first.create), T).empty


def test_plan_refuses_desired_bindings_outside_the_namespace() -> None:
    with pytest.raises(ValueError, match="outside namespace"):
        acl.plan({_b("User:router", "TOPIC", "other.audit", "WRITE")}, set(), T)


def test_in_scope_ignores_a_namespace_that_extends_ours() -> None:
    assert acl.in_scope(_b("User:router", "TOPIC", "ns.audit", "WRITE"), T)
    assert not acl.in_scope(_b("User:router", "TOPIC", "ns.audit.x.y", "WRITE"), T)
    assert not acl.in_scope(_b("User:router", "TOPIC", "nsx.audit", "WRITE"), T)


def test_acl_binding_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        AclBinding("router", "TOPIC", "t", "READ")
    with pytest.raises(ValueError):
        AclBinding("User:router", "TOPICS", "t", "READ")
    with pytest.raises(ValueError):
        AclBinding("User:router", "TOPIC", "t", "READ", "MATCH")
    assert str(_b("User:r", "TOPIC", "ns.feed.", "WRITE", "PREFIXED")) == (
        "ALLOW User:r WRITE TOPIC ns.feed.*"
    )


# -- credentials ------------------------------------------------------------------------------
def test_plaintext_adds_no_client_settings() -> None:
    assert PLAINTEXT.client_config() == {}
    assert from_settings(config.load({})) == PLAINTEXT


def test_credentials_from_environment(tmp_path: Path) -> None:
    pw = tmp_path / "router.password"
    pw.write_text("s3cret\n")
    env = {
        "SAFESHARE_SECURITY_PROTOCOL": "sasl_ssl",
        "SAFESHARE_SASL_USERNAME": "router",
        "SAFESHARE_SASL_PASSWORD_FILE": str(pw),
        "SAFESHARE_SSL_CAFILE": str(tmp_path / "ca.pem"),
    }
    creds = from_settings(config.load(env))
    assert creds.principal == "User:router"
    assert "s3cret" not in repr(creds)
    assert creds.client_config() == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "router",
        "sasl_plain_password": "s3cret",
        "ssl_check_hostname": True,
        "ssl_cafile": str(tmp_path / "ca.pem"),
    }


def test_sasl_without_user_or_password_file_fails_closed(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="SAFESHARE_SASL_USERNAME"):
        config.load({"SAFESHARE_SECURITY_PROTOCOL": "SASL_SSL"})
    settings = config.load({
        "SAFESHARE_SECURITY_PROTOCOL": "SASL_SSL",
        "SAFESHARE_SASL_USERNAME": "router",
        "SAFESHARE_SASL_PASSWORD_FILE": str(tmp_path / "missing"),
    })
    with pytest.raises(ConfigError, match="cannot read"):
        from_settings(settings)
    with pytest.raises(ConfigError, match="mechanism"):
        config.load({"SAFESHARE_SASL_MECHANISM": "GSSAPI"})
    with pytest.raises(ConfigError):
        Credentials(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", username="x")


# -- local secrets -------------------------------------------------------------------------------
def _mode(p: Path) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def test_local_tls_is_private_and_reused(tmp_path: Path) -> None:
    from cryptography import x509

    tls = ensure_local_tls(tmp_path / "tls")
    files = [tls.ca_cert, tls.ca_key, tls.broker_cert, tls.broker_keystore]
    assert all(_mode(f) == 0o600 for f in files)
    assert _mode(tls.directory) == 0o700
    before = {f: f.read_bytes() for f in files}
    ensure_local_tls(tmp_path / "tls")
    assert {f: f.read_bytes() for f in files} == before  # kept, not regenerated

    ca = x509.load_pem_x509_certificate(tls.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(tls.broker_cert.read_bytes())
    cert.verify_directly_issued_by(ca)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    keystore = tls.broker_keystore.read_text()
    assert keystore.startswith("-----BEGIN PRIVATE KEY-----")  # PKCS#8, as Kafka's PEM store wants
    assert keystore.count("BEGIN CERTIFICATE") == 2


def test_local_tls_reissues_the_broker_cert_for_new_hosts(tmp_path: Path) -> None:
    tls = ensure_local_tls(tmp_path)
    ca = tls.ca_cert.read_bytes()
    old = tls.broker_cert.read_bytes()
    ensure_local_tls(tmp_path, hosts=("127.0.0.1", "localhost", "kafka.internal"))
    assert tls.ca_cert.read_bytes() == ca
    assert tls.broker_cert.read_bytes() != old


def test_password_store(tmp_path: Path) -> None:
    store = PasswordStore(tmp_path / "users")
    assert store.get("router") is None
    pw = store.ensure("router")
    assert len(pw) >= 40 and store.ensure("router") == pw
    assert _mode(store.path("router")) == 0o600
    assert store.users() == ["router"]
    with pytest.raises(ValueError):
        store.path("../etc")
    assert scram_add_argument("admin", pw) == (
        f"SCRAM-SHA-512=[name=admin,password={pw},iterations=8192]"
    )
    with pytest.raises(ValueError):
        scram_add_argument("admin", "pw,with=comma")


def test_safeshare_acl_show_prints_the_derived_acls() -> None:
    from click.testing import CliRunner

    from broker.cli.acl import acl as acl_cli

    out = CliRunner().invoke(
        acl_cli, ["show", "--policy", str(EXAMPLE)], env={"SAFESHARE_NAMESPACE": "ns"}
    )
    assert out.exit_code == 0, out.output
    expected = sorted(acl.policy_acls(Policy.load(EXAMPLE), T))
    assert out.output.splitlines() == [str(b) for b in expected]


def test_the_gateway_writes_for_whom_it_serves_and_reads_what_it_and_the_workspace_show(
    derived: frozenset[AclBinding],
) -> None:
    gw = _of(derived, "gateway")
    reads = {r[1] for r in gw if r[0] == "TOPIC" and r[2] == "READ"}
    # feeds, the log and its own consultations; ingest for idempotency after a
    # restart; the workspace's clocks (time left) and acknowledgements (triage)
    assert reads == {"ns.audit", "ns.audit.checkpoints", "ns.ingest.police",
                     "ns.ingest.school", "ns.feed.mash", "ns.feed.mash-b",
                     "ns.gateway.consultations", "ns.loop.clocks", "ns.ack.mash",
                     "ns.ack.mash-b"}
    writes = {r[1] for r in gw if r[0] == "TOPIC" and r[2] == "WRITE"}
    assert writes == {"ns.audit", "ns.gateway.consultations", "ns.ingest.police",
                      "ns.ingest.school", "ns.consent.police", "ns.consent.school",
                      "ns.status.police", "ns.status.school", "ns.ack.mash", "ns.ack.mash-b"}
    assert all(r[3] == "LITERAL" for r in gw if r[0] == "TOPIC")  # no prefix
    assert {r for r in gw if r[0] != "TOPIC"} == {
        ("GROUP", f"{T.feed_group(s)}.workspace-", "READ", "PREFIXED") for s in ("mash", "mash-b")}
    assert all(acl.in_scope(b, T) for b in derived if b.principal == "User:gateway")
