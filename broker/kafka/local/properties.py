"""The broker's ``server.properties``: one JVM that is broker and sole KRaft controller.

What must stay the same across restarts of one data dir is an :class:`Instance`
(``instance.json``); the properties are derived from it on every start
(:func:`server_properties`) and rendered by :func:`render`. A secure instance
adds SASL/SCRAM over TLS for clients, mutual TLS on the controller listener and
Kafka's ``StandardAuthorizer`` (:func:`secure_properties`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from broker.kafka.security import (
    ADMIN_USER,
    BROKER_CN,
    BROKER_USER,
    SCRAM_MECHANISM,
    LocalTls,
    PasswordStore,
)

HOST = "127.0.0.1"
"""Every listener binds loopback only."""


@dataclass(frozen=True)
class Instance:
    """What must stay the same across restarts of one data dir (``instance.json``)."""

    cluster_id: str
    port: int
    controller_port: int
    version: str
    secure: bool = False


def server_properties(
    inst: Instance,
    data_dir: Path,
    *,
    tls: LocalTls | None = None,
    passwords: PasswordStore | None = None,
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """``server.properties`` of a one-node KRaft broker for ``inst``.

    ``tls`` and ``passwords`` (both, for a secure instance): the node speaks
    SASL_SSL with ACLs (:func:`secure_properties`). ``extra`` comes last and wins.
    """
    listener = f"PLAINTEXT://{HOST}:{inst.port}"
    controller = f"CONTROLLER://{HOST}:{inst.controller_port}"
    props = {
        # One JVM is broker and the only controller (voter) of a KRaft quorum.
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"{HOST}:{inst.controller_port}",
        "listeners": f"{listener},{controller}",
        "advertised.listeners": f"{listener},{controller}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir.resolve()),
        # Internal topics default to RF 3: on one node they could never be
        # created and transactions/groups would hang.
        "offsets.topic.replication.factor": "1",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        # Fewer internal partitions (default 50) make the first consumer
        # group / first transaction of a fresh broker start much faster.
        "offsets.topic.num.partitions": "5",
        "transaction.state.log.num.partitions": "5",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "num.partitions": "1",
        # Topics are created by broker.kafka.admin.Admin, with their configs;
        # a typo must fail, not silently create a default topic.
        "auto.create.topics.enable": "false",
        # Tests join groups constantly; don't wait 3 s for more members.
        "group.initial.rebalance.delay.ms": "0",
        # The cleaner's dedupe buffer is allocated on the heap (default 128 MiB).
        "log.cleaner.dedupe.buffer.size": str(32 * 1024 * 1024),
        "num.network.threads": "2",
        "num.io.threads": "4",
    }
    if inst.secure:
        if tls is None or passwords is None:
            raise ValueError("a secure instance needs its TLS files and password store")
        props.update(secure_properties(inst, tls, passwords))
    props.update(extra or {})
    return props

def secure_properties(inst: Instance, tls: LocalTls, passwords: PasswordStore) -> dict[str, str]:
    """Listeners, TLS stores, SASL and the authorizer of a secure node (package doc).

    Creates the ``broker`` and ``admin`` passwords if they do not exist yet.
    """
    broker_pw = passwords.ensure(BROKER_USER)
    passwords.ensure(ADMIN_USER)
    listener = f"SASL_SSL://{HOST}:{inst.port}"
    controller = f"CONTROLLER://{HOST}:{inst.controller_port}"
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="{BROKER_USER}" password="{broker_pw}";'
    )
    return {
        "listeners": f"{listener},{controller}",
        "advertised.listeners": f"{listener},{controller}",
        "inter.broker.listener.name": "SASL_SSL",
        "listener.security.protocol.map": "CONTROLLER:SSL,SASL_SSL:SASL_SSL",
        # Clients: SCRAM over TLS. The broker logs in to itself as `broker`.
        "sasl.enabled.mechanisms": SCRAM_MECHANISM,
        "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
        f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
        # KIP-651 PEM stores: key + chain in one file; the CA as trust store.
        "ssl.keystore.type": "PEM",
        "ssl.keystore.location": str(tls.broker_keystore.resolve()),
        "ssl.truststore.type": "PEM",
        "ssl.truststore.location": str(tls.ca_cert.resolve()),
        "ssl.endpoint.identification.algorithm": "https",
        # SCRAM credentials live in the metadata log, which the controller
        # listener must work without: it uses mutual TLS instead.
        "listener.name.controller.ssl.client.auth": "required",
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "allow.everyone.if.no.acl.found": "false",
        "super.users": ";".join(
            (f"User:CN={BROKER_CN}", f"User:{BROKER_USER}", f"User:{ADMIN_USER}")
        ),
    }


def render(inst: Instance, props: Mapping[str, str]) -> str:
    """``props`` as a properties file, headed by where it came from."""
    lines = [
        "# Generated by broker/kafka/local on every start; edits are overwritten.",
        f"# Kafka {inst.version}, cluster {inst.cluster_id}",
    ]
    lines += [f"{k}={v}" for k, v in props.items()]
    return "\n".join(lines) + "\n"
