"""The secured local broker the ACL and consent tests log in to (``secured`` fixture).

SASL_SSL with SCRAM-SHA-512, ``StandardAuthorizer``,
``allow.everyone.if.no.acl.found=false``; every principal of the example
policy has a login, and the ACLs are applied exactly as ``safeshare acl
apply`` does. One broker per test session (tests/conftest.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from uuid import uuid4

import pytest

from broker import config
from broker.kafka import acl
from broker.kafka.admin import Admin
from broker.kafka.configuration import standard_topic_specs
from broker.kafka.exceptions import KafkaError
from broker.kafka.local import LocalKafka
from broker.kafka.security import Credentials
from broker.policy import Policy
from broker.topics import Topics

EXAMPLE = config.PROJECT_ROOT / "deploy" / "policy" / "example-mash.yaml"


@dataclass
class Secured:
    local: LocalKafka
    bootstrap: str
    topics: Topics
    policy: Policy
    applied: acl.AclPlan

    def creds(self, user: str) -> Credentials:
        return self.local.credentials(user)

    @property
    def agencies(self) -> list[str]:
        return [a.id for a in self.policy.agencies]

    @property
    def subscribers(self) -> list[str]:
        return [s.id for s in self.policy.subscribers]


def start_secured(tmp_path: Path, settings: config.Settings) -> Iterator[Secured]:
    local = LocalKafka(
        settings.home, settings.kafka_version,
        instance_dir=tmp_path, secure=True,
    )
    try:
        state = local.start()
    except KafkaError as exc:
        pytest.fail(f"the secure local broker did not start: {exc}", pytrace=False)
    try:
        policy = Policy.load(EXAMPLE)
        topics = Topics(f"t{uuid4().hex[:10]}")
        local.add_users(acl.policy_users(policy))
        with Admin(state.bootstrap, credentials=local.credentials()) as admin:
            admin.ensure_topics(standard_topic_specs(
                topics, [a.id for a in policy.agencies], [s.id for s in policy.subscribers],
                partitions=1,
            ))
            applied = acl.apply(admin, acl.policy_acls(policy, topics), topics)
        yield Secured(local, state.bootstrap, topics, policy, applied)
    finally:
        local.stop()
