"""The admin client: topics (idempotent creation with configs), ACLs and SCRAM users.

! ``create_topics`` returns before the new topic has a leader everywhere:
:meth:`Admin.ensure_topics` waits for leaders (``wait_for_topics``), or the
first produce may fail with UnknownTopicOrPartition.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import kafka
import kafka.errors as _kerr
from kafka.admin import (
    ACL,
    ACLFilter,
    ACLOperation,
    ACLPermissionType,
    ACLResourcePatternType,
    ConfigResource,
    ConfigResourceType,
    ResourcePattern,
    ResourcePatternFilter,
    ResourceType,
    UserScramCredentialUpsertion,
)

from broker.kafka.configuration import DEFAULT_TIMEOUT_S, TopicSpec, _construct
from broker.kafka.exceptions import KafkaError, TopicError, translated
from broker.kafka.security import SCRAM_ITERATIONS, SCRAM_MECHANISM, Credentials, resolve
from broker.kafka.structs import Closeable, TopicPartition


@dataclass(frozen=True)
class GroupMember:
    """One member of a consumer group as the coordinator sees it."""

    client_id: str
    instance_id: str | None
    """``group.instance.id`` of a static member (KIP-345), None for a dynamic one."""
    partitions: frozenset[TopicPartition]


@dataclass(frozen=True)
class GroupDescription:
    state: str
    """``Stable``, ``PreparingRebalance``, ``CompletingRebalance``, ``Empty`` or ``Dead``."""
    members: tuple[GroupMember, ...]


@dataclass(frozen=True)
class TopicDescription:
    name: str
    partitions: int
    replication_factor: int
    config: Mapping[str, str]


ACL_RESOURCE_TYPES = frozenset({"TOPIC", "GROUP", "CLUSTER", "TRANSACTIONAL_ID"})
ACL_PATTERNS = frozenset({"LITERAL", "PREFIXED"})
ACL_OPERATIONS = frozenset({
    "ALL", "READ", "WRITE", "CREATE", "DELETE", "ALTER", "DESCRIBE", "CLUSTER_ACTION",
    "DESCRIBE_CONFIGS", "ALTER_CONFIGS", "IDEMPOTENT_WRITE",
})
CLUSTER_RESOURCE = "kafka-cluster"
"""The one name of Kafka's CLUSTER resource."""


@dataclass(frozen=True, order=True)
class AclBinding:
    """One Kafka ACL: ``permission`` for ``principal`` to ``operation`` on a resource.

    ``pattern`` ``PREFIXED`` matches every resource whose name starts with
    ``resource_name`` (KIP-290). Hashable and ordered, so sets of bindings
    can be diffed and printed in a stable order.
    """

    principal: str
    """``User:<name>``."""
    resource_type: str
    """``TOPIC``, ``GROUP``, ``CLUSTER`` or ``TRANSACTIONAL_ID``."""
    resource_name: str
    operation: str
    pattern: str = "LITERAL"
    permission: str = "ALLOW"
    host: str = "*"

    def __post_init__(self) -> None:
        if not self.principal.startswith("User:") or len(self.principal) <= len("User:"):
            raise ValueError(f"ACL principal must be User:<name>, not {self.principal!r}")
        if self.resource_type not in ACL_RESOURCE_TYPES:
            raise ValueError(f"unknown ACL resource type {self.resource_type!r}")
        if self.pattern not in ACL_PATTERNS:
            raise ValueError(f"unknown ACL pattern type {self.pattern!r}")
        if self.operation not in ACL_OPERATIONS:
            raise ValueError(f"unknown ACL operation {self.operation!r}")
        if self.permission not in {"ALLOW", "DENY"}:
            raise ValueError(f"ACL permission must be ALLOW or DENY, not {self.permission!r}")
        if not self.resource_name:
            raise ValueError("ACL resource name must not be empty")

    def __str__(self) -> str:
        name = self.resource_name + ("*" if self.pattern == "PREFIXED" else "")
        host = "" if self.host == "*" else f" from {self.host}"
        return (
            f"{self.permission} {self.principal} {self.operation} "
            f"{self.resource_type} {name}{host}"
        )


def _kacl(b: AclBinding) -> Any:
    return ACL(
        principal=b.principal,
        host=b.host,
        operation=ACLOperation[b.operation],
        permission_type=ACLPermissionType[b.permission],
        resource_pattern=ResourcePattern(
            ResourceType[b.resource_type], b.resource_name, ACLResourcePatternType[b.pattern]
        ),
    )


def _binding(raw: Any) -> AclBinding | None:
    """Our value for a kafka-python ACL; None for kinds Safeshare never writes."""
    rp = raw.resource_pattern
    try:
        return AclBinding(
            principal=raw.principal,
            resource_type=rp.resource_type.name,
            resource_name=rp.resource_name,
            operation=raw.operation.name,
            pattern=rp.pattern_type.name,
            permission=raw.permission_type.name,
            host=raw.host,
        )
    except (ValueError, KeyError):
        return None


_TOPIC_EXISTS = _kerr.TopicAlreadyExistsError.errno
_UNKNOWN_TOPIC = _kerr.UnknownTopicOrPartitionError.errno


class Admin(Closeable):
    """Topic administration (idempotent creation with configs, description,
    deletion), ACLs and SCRAM users.

    ``credentials``: who the admin client is (default: the environment's).
    """

    def __init__(
        self,
        bootstrap: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        credentials: Credentials | None = None,
        **overrides: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.timeout_s = timeout_s
        cfg: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "client_id": "safeshare-admin",
            "bootstrap_timeout_ms": int(timeout_s * 1000),
            "request_timeout_ms": int(timeout_s * 1000),
        }
        cfg.update(resolve(credentials).client_config())
        cfg.update(overrides)
        self._raw = _construct("create admin client", kafka.KafkaAdminClient, cfg)

    @property
    def raw(self) -> Any:
        return self._raw

    def list_topics(self) -> set[str]:
        with translated("list topics"):
            return set(self._raw.list_topics())

    def ensure_topics(self, specs: Iterable[TopicSpec]) -> dict[str, str]:
        """Create missing topics and bring existing ones' configs to the spec.

        Returns ``{name: "created" | "exists" | "updated"}``. Idempotent: a topic
        that already exists is fine; if one of the spec's configs differs (say
        someone created the audit topic with the default 7-day retention) it is
        set to the spec's value, because a wrong retention silently loses audit
        records. The partition count of an existing topic is never changed:
        adding partitions would move subjects to other partitions and break
        per-subject ordering.
        """
        specs = list(specs)
        if not specs:
            return {}
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate topic names in specs: {names}")
        request = {
            s.name: {
                "num_partitions": s.partitions,
                "replication_factor": s.replication_factor,
                "configs": dict(s.config),
            }
            for s in specs
        }
        timeout_ms = int(self.timeout_s * 1000)
        with translated("create topics"):
            res = self._raw.create_topics(request, timeout_ms=timeout_ms, raise_errors=False)
        status: dict[str, str] = {}
        errors: list[str] = []
        for t in res["topics"]:
            code = t.get("error_code", 0)
            if code == 0:
                status[t["name"]] = "created"
            elif code == _TOPIC_EXISTS:
                status[t["name"]] = "exists"
            else:
                err = _kerr.for_code(code).__name__
                errors.append(f"{t['name']}: {err} {t.get('error_message') or ''}".strip())
        if errors:
            raise TopicError("could not create topics: " + "; ".join(errors))
        existing = [s for s in specs if status.get(s.name) == "exists" and s.config]
        if existing:
            current = self.describe([s.name for s in existing])
            for s in existing:
                drift = {
                    k: v for k, v in s.config.items() if current[s.name].config.get(k) != str(v)
                }
                if drift:
                    self.alter_topic_config(s.name, drift)
                    status[s.name] = "updated"
        with translated("wait for topic leaders"):
            self._raw.wait_for_topics(names, timeout_ms=timeout_ms)
        return status

    def alter_topic_config(self, name: str, config: Mapping[str, str]) -> None:
        """Set topic-level configs (incrementally: other keys keep their values)."""
        resource = ConfigResource(ConfigResourceType.TOPIC, name, dict(config))
        with translated(f"alter config of {name}"):
            self._raw.alter_configs([resource], incremental=True)

    def describe(self, names: Iterable[str]) -> dict[str, TopicDescription]:
        """Partitions, replication factor and every topic-level config value.

        Raises TopicError if a topic does not exist.
        """
        names = list(names)
        if not names:
            return {}
        with translated("describe topics"):
            meta = self._raw.describe_topics(names)
        by_name = {t["name"]: t for t in meta}
        missing = [
            n for n in names
            if n not in by_name or by_name[n].get("error_code", 0) != 0
        ]
        if missing:
            raise TopicError(f"no such topics: {missing}")
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        with translated("describe topic configs"):
            cfgs = self._raw.describe_configs(resources, config_filter="all")
        out: dict[str, TopicDescription] = {}
        for n in names:
            parts = by_name[n].get("partitions") or []
            rf = max((len(p.get("replica_nodes") or []) for p in parts), default=0)
            raw_cfg = cfgs.get("topic", {}).get(n, {})
            config = {
                k: str(v.get("value")) for k, v in raw_cfg.items() if v.get("value") is not None
            }
            out[n] = TopicDescription(n, len(parts), rf, config)
        return out

    def delete_topics(self, names: Iterable[str]) -> list[str]:
        """Delete topics; ones that do not exist are ignored. Returns those deleted."""
        names = list(names)
        if not names:
            return []
        with translated("delete topics"):
            res = self._raw.delete_topics(
                names, timeout_ms=int(self.timeout_s * 1000), raise_errors=False
            )
        deleted: list[str] = []
        errors: list[str] = []
        for t in res["topics"]:
            code = t.get("error_code", 0)
            if code == 0:
                deleted.append(t["name"])
            elif code != _UNKNOWN_TOPIC:
                errors.append(f"{t['name']}: {_kerr.for_code(code).__name__}")
        if errors:
            raise TopicError("could not delete topics: " + "; ".join(errors))
        return deleted

    # -- consumer groups ------------------------------------------------------------
    def describe_group(self, group_id: str) -> GroupDescription:
        """The group's state and each member's partitions (empty while rebalancing)."""
        with translated("describe group"):
            raw = self._raw.describe_groups([group_id])[group_id]
        members = []
        for m in raw.get("members") or ():
            assignment = m.get("member_assignment")
            topics = (
                assignment.get("assigned_partitions", ()) if isinstance(assignment, dict) else ()
            )
            members.append(GroupMember(
                client_id=str(m.get("client_id", "")),
                instance_id=m.get("group_instance_id"),
                partitions=frozenset(
                    TopicPartition(t["topic"], int(p)) for t in topics for p in t["partitions"]
                ),
            ))
        return GroupDescription(str(raw.get("group_state", "")), tuple(members))

    def group_offsets(self, group_id: str) -> dict[TopicPartition, int]:
        """The group's committed offsets (next to read), one round trip."""
        with translated("list group offsets"):
            raw = self._raw.list_group_offsets({group_id: None})[group_id]
        return {
            TopicPartition(tp.topic, tp.partition): int(om.offset)
            for tp, om in raw.items()
            if om.offset is not None and om.offset >= 0
        }

    # -- ACLs (the cluster must run an authorizer) ------------------------------------
    def describe_acls(self) -> set[AclBinding]:
        """Every ACL the cluster holds (of the kinds :class:`AclBinding` can express)."""
        flt = ACLFilter(
            principal=None, host=None, operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(
                ResourceType.ANY, None, ACLResourcePatternType.ANY
            ),
        )
        with translated("describe ACLs"):
            raw, _ = self._raw.describe_acls(flt)
        return {b for b in (_binding(a) for a in raw) if b is not None}

    def create_acls(self, bindings: Iterable[AclBinding]) -> None:
        """Create ACLs (creating one that exists is a no-op in Kafka)."""
        bindings = sorted(set(bindings))
        if not bindings:
            return
        with translated("create ACLs"):
            res = self._raw.create_acls([_kacl(b) for b in bindings])
        if res["failed"]:
            raise KafkaError(
                "could not create ACLs: " + "; ".join(str(e) for e in res["failed"])
            )

    def delete_acls(self, bindings: Iterable[AclBinding]) -> int:
        """Delete exactly these ACLs (each filter matches one binding); how many went."""
        bindings = sorted(set(bindings))
        if not bindings:
            return 0
        filters = [
            ACLFilter(
                principal=b.principal, host=b.host, operation=ACLOperation[b.operation],
                permission_type=ACLPermissionType[b.permission],
                resource_pattern=ResourcePatternFilter(
                    ResourceType[b.resource_type], b.resource_name,
                    ACLResourcePatternType[b.pattern],
                ),
            )
            for b in bindings
        ]
        with translated("delete ACLs"):
            res = self._raw.delete_acls(filters)
        errors = [f"{flt}: {err.__name__}" for flt, _, err in res if err is not _kerr.NoError]
        if errors:
            raise KafkaError("could not delete ACLs: " + "; ".join(errors))
        return sum(len(matched) for _, matched, _ in res)

    # -- SCRAM users ---------------------------------------------------------------------
    def upsert_scram_users(
        self,
        passwords: Mapping[str, str],
        *,
        mechanism: str = SCRAM_MECHANISM,
        iterations: int = SCRAM_ITERATIONS,
    ) -> None:
        """Create or reset SCRAM credentials (the broker stores only salted keys)."""
        if not passwords:
            return
        ups = [
            UserScramCredentialUpsertion(user, mechanism, pw, iterations=iterations)
            for user, pw in sorted(passwords.items())
        ]
        with translated("alter SCRAM credentials"):
            res = self._raw.alter_user_scram_credentials(ups)
        errors = [f"{user}: {msg}" for user, msg in res.items() if msg]
        if errors:
            raise KafkaError("could not set SCRAM credentials: " + "; ".join(errors))

    def scram_users(self) -> set[str]:
        """Users that hold SCRAM credentials."""
        with translated("describe SCRAM credentials"):
            res = self._raw.describe_user_scram_credentials()
        return {user for user, info in res.items() if not info.get("error")}

    def close(self) -> None:
        self._raw.close()
