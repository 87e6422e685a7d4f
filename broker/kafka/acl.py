"""Who may touch what, enforced by Kafka itself: ACLs derived from the policy's registry.

The policy names the agencies and subscribers; their topics follow from
:mod:`broker.topics`. This module turns both into the complete set of Kafka
ACLs a deployment needs (:func:`desired_acls`, a pure function), compares it
with what the cluster holds (:func:`plan`) and makes the cluster match
(:func:`apply`). The broker runs ``StandardAuthorizer`` with
``allow.everyone.if.no.acl.found=false``, so whatever is not listed here is
denied: an agency cannot read a feed, a subscriber cannot read another's
feed, nobody but the router can write a feed, and nobody but the router and
the log's own signer (the checkpointer, for key rotations) the audit log.

| principal                 | may                                                        |
|---------------------------|------------------------------------------------------------|
| ``User:agency-<id>``      | WRITE its own ingest topic and its own consent topic       |
| ``User:subscriber-<id>``  | READ its own feed; use its own group ``<ns>.subscriber.<id>`` |
|                           | and groups named ``<ns>.subscriber.<id>.*`` (feed tails);  |
|                           | WRITE and READ its own identity decisions topic, READ its  |
|                           | own identity review topic                                  |
| ``User:router``           | READ every ingest and consent topic, audit, checkpoints;   |
|                           | WRITE every feed, audit and quarantine; group              |
|                           | ``<ns>.router``; transactional ids ``<ns>.router.*``;      |
|                           | READ every identity decisions topic, WRITE every identity  |
|                           | review topic                                               |
| ``User:checkpointer``     | READ audit and checkpoints; WRITE checkpoints, and audit   |
|                           | (a key rotation is itself a leaf, committed with the new   |
|                           | key list); transactional ids ``<ns>.checkpointer.*``       |
| ``User:witness``          | READ audit and checkpoints; WRITE checkpoints (cosignatures) |
| ``User:auditor``          | READ audit and checkpoints                                 |
| ``User:operator``         | READ quarantine                                            |
| ``User:loop``             | READ clock starts and every acknowledgement topic; READ    |
|                           | and WRITE the clock changelog; WRITE notices, status,      |
|                           | quarantine and audit; group ``<ns>.loop``; transactional   |
|                           | ids                                                        |
|                           | ``<ns>.loop.*``                                            |
| ``User:gateway``          | for every agency it serves: WRITE its ingest and consent   |
|                           | topics, READ its ingest topic (idempotency after a         |
|                           | restart), WRITE its status topic (workspace notices); for  |
|                           | every subscriber: READ its feed, READ and WRITE its        |
|                           | acknowledgements, groups                                   |
|                           | ``<ns>.subscriber.<id>.workspace-*``; WRITE audit          |
|                           | (CONSULTED leaves); READ and WRITE its consultations       |
|                           | topic; READ audit, checkpoints (receipts with proofs) and  |
|                           | the clock changelog (the workspace's time left)            |

Closing the loop adds to the parties' own rights: an agency READs its status
topic (what happened to what it sent); a subscriber WRITEs its own
acknowledgement topic and READs its notices; the router WRITEs clock starts
in the same transaction as the shares that start them, and the access
notices (CP-IS) those shares cause.

Why these and no more (Kafka's authorizer rules, checked against 4.1):

* WRITE and READ imply DESCRIBE (metadata, ListOffsets, FindCoordinator), so
  no DESCRIBE binding is listed separately.
* An idempotent producer needs no cluster permission: since Kafka 2.8
  (KIP-679) InitProducerId is allowed to a principal that may WRITE some
  topic, instead of IDEMPOTENT_WRITE on the cluster.
* A transactional producer needs WRITE on its transactional id; committing
  consumer offsets in the transaction needs READ on the group and the topic.
* Consent arrives on a topic per recording agency, as ingest does, so Kafka
  itself stops an agency writing consent in another's name; the router then
  quarantines a record naming another agency than its topic's owner, and
  checks the policy's consent entitlements (who may record consent for which
  purpose, and who may withdraw what another agency recorded).
* Link and unlink decisions arrive on a topic per subscriber, as consent
  does per agency, so Kafka itself stops a subscriber deciding in another's
  name; the router then quarantines a decision naming another subscriber
  than its topic's owner, or from a subscriber the policy's
  ``identity.deciders`` does not name (a school's DSL cannot merge children).
* Readers without a consumer group (the router's consent and audit
  followers, auditors, the checkpointer) need no group ACL.
* The subscriber group ACLs are a LITERAL binding for the group itself and a
  PREFIXED one for ``<group>.``: ids never contain a dot, so subscriber
  ``a`` gets no access to the groups of subscriber ``a-b``, which a bare
  prefix ``<ns>.subscriber.a`` would give.

:func:`plan` touches only bindings of Safeshare principals on resources of
this namespace (or on the cluster itself), so ACLs of other namespaces,
other systems or the super users are never deleted. Everything else that
such a principal holds and the policy does not give it is *stale* and goes:
a removed agency or subscriber loses its access at the next ``apply``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from broker.kafka.admin import CLUSTER_RESOURCE, AclBinding
from broker.kafka.exceptions import KafkaTimeoutError
from broker.topics import Topics, check_id

if TYPE_CHECKING:
    from broker.kafka.admin import Admin
    from broker.policy import Policy

__all__ = [
    "AUDITOR",
    "CHECKPOINTER",
    "GATEWAY",
    "LOOP",
    "OPERATOR",
    "ROUTER",
    "SERVICE_USERS",
    "WITNESS",
    "AclPlan",
    "agency_user",
    "apply",
    "desired_acls",
    "in_scope",
    "is_safeshare_principal",
    "plan",
    "policy_acls",
    "policy_users",
    "principal",
    "subscriber_user",
]

ROUTER = "router"
CHECKPOINTER = "checkpointer"
WITNESS = "witness"
AUDITOR = "auditor"
OPERATOR = "operator"
LOOP = "loop"
GATEWAY = "gateway"
SERVICE_USERS = (ROUTER, CHECKPOINTER, WITNESS, AUDITOR, OPERATOR, LOOP, GATEWAY)
"""Safeshare's own services' user names (one principal each, whatever the policy)."""

APPLY_SETTLE_S = 15.0
"""How long :func:`apply` waits for the broker to show the ACLs it changed."""

_AGENCY = "agency-"
_SUBSCRIBER = "subscriber-"
_ID = r"[a-z0-9][a-z0-9_-]{0,62}"
_SAFESHARE_USER = re.compile(
    rf"^User:(?:{_AGENCY}{_ID}|{_SUBSCRIBER}{_ID}|{'|'.join(SERVICE_USERS)})\Z"
)


def agency_user(agency_id: str) -> str:
    """The SASL user an agency's systems log in as."""
    return _AGENCY + check_id("agency", agency_id)


def subscriber_user(subscriber_id: str) -> str:
    """The SASL user a subscriber's systems log in as."""
    return _SUBSCRIBER + check_id("subscriber", subscriber_id)


def principal(user: str) -> str:
    """Kafka's principal for a SASL user."""
    return f"User:{user}"


def is_safeshare_principal(p: str) -> bool:
    """True for the principals whose ACLs Safeshare manages (never the super users)."""
    return bool(_SAFESHARE_USER.match(p))


# -- derivation (pure) ----------------------------------------------------------------------
def desired_acls(
    topics: Topics, agencies: Iterable[str], subscribers: Iterable[str]
) -> frozenset[AclBinding]:
    """Every ACL a deployment with these agencies and subscribers needs (module table)."""
    agencies, subscribers = list(agencies), list(subscribers)

    def allow(user: str, rtype: str, name: str, op: str, pattern: str = "LITERAL") -> AclBinding:
        return AclBinding(principal(user), rtype, name, op, pattern)

    out: set[AclBinding] = set()
    for a in agencies:
        user = agency_user(a)
        out.add(allow(user, "TOPIC", topics.ingest(a), "WRITE"))
        out.add(allow(user, "TOPIC", topics.status(a), "READ"))
        out.add(allow(user, "TOPIC", topics.consent(a), "WRITE"))
    for s in subscribers:
        user = subscriber_user(s)
        group = topics.feed_group(s)
        out.add(allow(user, "TOPIC", topics.feed(s), "READ"))
        out.add(allow(user, "GROUP", group, "READ"))
        out.add(allow(user, "GROUP", group + ".", "READ", "PREFIXED"))
        out.add(allow(user, "TOPIC", topics.acks(s), "WRITE"))
        out.add(allow(user, "TOPIC", topics.notices(s), "READ"))
        out.add(allow(user, "TOPIC", topics.identity_decisions(s), "WRITE"))
        out.add(allow(user, "TOPIC", topics.identity_decisions(s), "READ"))  # what it decided
        out.add(allow(user, "TOPIC", topics.identity_reviews(s), "READ"))

    out |= {
        allow(ROUTER, "TOPIC", topics.ingest_prefix, "READ", "PREFIXED"),
        allow(ROUTER, "TOPIC", topics.consent_prefix, "READ", "PREFIXED"),
        # Every instance follows the audit log (dedup by event id) and the
        # checkpoints (checkpoint lag metric).
        allow(ROUTER, "TOPIC", topics.audit, "READ"),
        allow(ROUTER, "TOPIC", topics.audit_checkpoints, "READ"),
        allow(ROUTER, "TOPIC", topics.feed_prefix, "WRITE", "PREFIXED"),
        allow(ROUTER, "TOPIC", topics.audit, "WRITE"),
        allow(ROUTER, "TOPIC", topics.quarantine, "WRITE"),
        allow(ROUTER, "TOPIC", topics.clock_starts, "WRITE"),
        # The identity index: written with the shares, read back at start.
        allow(ROUTER, "TOPIC", topics.identity, "READ"),
        allow(ROUTER, "TOPIC", topics.identity, "WRITE"),
        # Link/unlink decisions in; review items out with the event they are about.
        allow(ROUTER, "TOPIC", topics.identity_decisions_prefix, "READ", "PREFIXED"),
        allow(ROUTER, "TOPIC", topics.identity_reviews_prefix, "WRITE", "PREFIXED"),
        # Access notices (CP-IS) go out with the share that caused them.
        allow(ROUTER, "TOPIC", topics.notices_prefix, "WRITE", "PREFIXED"),
        allow(ROUTER, "GROUP", topics.router_group, "READ"),
        allow(ROUTER, "TRANSACTIONAL_ID", topics.router_transactional_id(""), "WRITE",
              "PREFIXED"),
    }
    for user in (CHECKPOINTER, WITNESS, AUDITOR):
        out.add(allow(user, "TOPIC", topics.audit, "READ"))
        out.add(allow(user, "TOPIC", topics.audit_checkpoints, "READ"))
    for user in (CHECKPOINTER, WITNESS):
        out.add(allow(user, "TOPIC", topics.audit_checkpoints, "WRITE"))
    # Checkpointer.rotate_key commits the KEY_ROTATION leaf and the new key
    # list in one transaction, so the log's signer appends to the audit log.
    out.add(allow(CHECKPOINTER, "TOPIC", topics.audit, "WRITE"))
    out.add(allow(CHECKPOINTER, "TRANSACTIONAL_ID", topics.checkpointer_group + ".", "WRITE",
                  "PREFIXED"))
    out.add(allow(OPERATOR, "TOPIC", topics.quarantine, "READ"))
    out |= {
        allow(LOOP, "TOPIC", topics.clock_starts, "READ"),
        allow(LOOP, "TOPIC", topics.ack_prefix, "READ", "PREFIXED"),
        allow(LOOP, "TOPIC", topics.clocks, "READ"),
        allow(LOOP, "TOPIC", topics.clocks, "WRITE"),
        allow(LOOP, "TOPIC", topics.notices_prefix, "WRITE", "PREFIXED"),
        allow(LOOP, "TOPIC", topics.status_prefix, "WRITE", "PREFIXED"),
        allow(LOOP, "TOPIC", topics.quarantine, "WRITE"),
        # Acknowledgements, escalations and status notices are audit leaves.
        allow(LOOP, "TOPIC", topics.audit, "WRITE"),
        allow(LOOP, "GROUP", topics.loop_group, "READ"),
        allow(LOOP, "TRANSACTIONAL_ID", topics.loop_transactional_id(""), "WRITE", "PREFIXED"),
    }
    out |= gateway_acls(topics, agencies, subscribers)
    return frozenset(out)


def gateway_acls(
    topics: Topics, agencies: Iterable[str], subscribers: Iterable[str]
) -> set[AclBinding]:
    """The HTTPS gateway's own principal (module table): what it does for the
    agencies and subscribers it serves, and its own topics; never a feed write,
    the quarantine, a clock write or another party's notices. It serves the
    workspace too, which reads the clocks (each concern's time left), the
    subscribers' acknowledgements (triage after a restart, break-glass reviews)
    and its consultations topic (the DPO's s.62 export)."""
    who = principal(GATEWAY)
    out = {
        AclBinding(who, "TOPIC", topics.audit, "WRITE"),
        AclBinding(who, "TOPIC", topics.audit, "READ"),
        AclBinding(who, "TOPIC", topics.audit_checkpoints, "READ"),
        AclBinding(who, "TOPIC", topics.consultations, "WRITE"),
        AclBinding(who, "TOPIC", topics.consultations, "READ"),
        AclBinding(who, "TOPIC", topics.clocks, "READ"),
    }
    for a in agencies:
        out.add(AclBinding(who, "TOPIC", topics.ingest(a), "WRITE"))
        out.add(AclBinding(who, "TOPIC", topics.ingest(a), "READ"))
        out.add(AclBinding(who, "TOPIC", topics.consent(a), "WRITE"))
        out.add(AclBinding(who, "TOPIC", topics.status(a), "WRITE"))
    for s in subscribers:
        out.add(AclBinding(who, "TOPIC", topics.feed(s), "READ"))
        out.add(AclBinding(who, "TOPIC", topics.acks(s), "WRITE"))
        out.add(AclBinding(who, "TOPIC", topics.acks(s), "READ"))
        out.add(AclBinding(who, "GROUP", topics.feed_group(s) + ".workspace-", "READ",
                           "PREFIXED"))
    return out


def policy_acls(policy: Policy, topics: Topics) -> frozenset[AclBinding]:
    """:func:`desired_acls` for the policy's registry of agencies and subscribers."""
    return desired_acls(
        topics, (a.id for a in policy.agencies), (s.id for s in policy.subscribers)
    )


def policy_users(policy: Policy) -> list[str]:
    """Every SASL user the policy's deployment needs, services included."""
    return sorted(
        [agency_user(a.id) for a in policy.agencies]
        + [subscriber_user(s.id) for s in policy.subscribers]
        + list(SERVICE_USERS)
    )


# -- diff (pure) ---------------------------------------------------------------------------
def _scope(topics: Topics) -> re.Pattern[str]:
    ns = re.escape(topics.namespace)
    return re.compile(
        rf"^{ns}\.(?:ingest\.(?:{_ID})?|consent(?:\.(?:{_ID})?)?|feed\.(?:{_ID})?|quarantine|identity"
        rf"|identity-(?:decisions|reviews)\.(?:{_ID})?|audit"
        rf"|audit\.checkpoints|router\.?(?:{_ID})?|subscriber\.{_ID}(?:\.(?:workspace-)?)?"
        rf"|checkpointer\.?(?:{_ID})?"
        rf"|loop(?:\.clock-starts|\.clocks|\.(?:{_ID})?)?|(?:ack|notices|status)\.(?:{_ID})?"
        rf"|gateway\.consultations)\Z"
    )


def in_scope(binding: AclBinding, topics: Topics) -> bool:
    """True if :func:`plan` manages ``binding``: a Safeshare principal on this
    namespace's resources (by name shape, so namespace ``ns.x`` is not ``ns``'s)
    or on the cluster."""
    if not is_safeshare_principal(binding.principal):
        return False
    if binding.resource_type == "CLUSTER":
        return binding.resource_name == CLUSTER_RESOURCE
    return bool(_scope(topics).match(binding.resource_name))


@dataclass(frozen=True)
class AclPlan:
    """What :func:`apply` will do: create the missing bindings, delete the stale ones."""

    create: tuple[AclBinding, ...]
    delete: tuple[AclBinding, ...]
    unchanged: int

    @property
    def empty(self) -> bool:
        return not self.create and not self.delete

    def lines(self) -> list[str]:
        """``+ binding`` / ``- binding`` lines, grouped by principal, stable order."""
        rows = [(b, "+") for b in self.create] + [(b, "-") for b in self.delete]
        rows.sort(key=lambda r: (r[0].principal, r[0], r[1]))
        return [f"{sign} {b}" for b, sign in rows]

    def summary(self) -> str:
        return (
            f"{len(self.create)} to create, {len(self.delete)} to delete, "
            f"{self.unchanged} unchanged"
        )


def plan(
    desired: Iterable[AclBinding], current: Iterable[AclBinding], topics: Topics
) -> AclPlan:
    """The difference between what the policy needs and what the cluster holds.

    Bindings outside :func:`in_scope` are neither created nor deleted: a
    desired binding out of scope is a bug in the derivation, so it raises.
    """
    want = set(desired)
    stray = sorted(b for b in want if not in_scope(b, topics))
    if stray:
        raise ValueError(f"derived ACLs outside namespace {topics.namespace!r}: {stray[:3]}")
    have = {b for b in current if in_scope(b, topics)}
    return AclPlan(
        create=tuple(sorted(want - have)),
        delete=tuple(sorted(have - want)),
        unchanged=len(want & have),
    )


# -- against a cluster ------------------------------------------------------------------------
def apply(
    admin: Admin,
    desired: Iterable[AclBinding],
    topics: Topics,
    *,
    dry_run: bool = False,
    settle_s: float = APPLY_SETTLE_S,
) -> AclPlan:
    """Make the cluster's Safeshare ACLs of this namespace exactly ``desired``.

    Missing bindings are created before stale ones are deleted, so a
    principal that keeps an access never loses it midway. With ``dry_run``
    the plan is only computed. Returns the plan (as it was before applying).

    ! The controller commits ACL changes before the broker's authorizer has
    them: right after CreateAcls a DescribeAcls (and an authorization) may
    still see the old set. So ``apply`` returns only once the broker shows
    the new set, waiting up to ``settle_s``; otherwise it raises.
    """
    want = frozenset(desired)
    p = plan(want, admin.describe_acls(), topics)
    if dry_run or p.empty:
        return p
    admin.create_acls(p.create)
    admin.delete_acls(p.delete)
    deadline = time.monotonic() + settle_s
    while True:
        left = plan(want, admin.describe_acls(), topics)
        if left.empty:
            return p
        if time.monotonic() >= deadline:
            raise KafkaTimeoutError(
                f"ACLs applied but the broker still shows {left.summary()} after {settle_s:.0f} s"
            )
        time.sleep(0.1)  # poll interval of the question above, not a guess
