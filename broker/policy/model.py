"""The registry and rules of a loaded policy, as frozen values.

Built only by the checker (``broker.policy._check``) from a file that passed
every check, so the engine can trust them without re-validating.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from broker.policy.vocabulary import ObligationCode
from broker.topics import DEFAULT, Topics


@dataclass(frozen=True)
class AgencyKey:
    """A public key an agency signs its events with (Ed25519, base64 of the 32 raw bytes)."""

    id: str
    public_key: str
    algorithm: str = "ed25519"
    not_before_ms: int | None = None
    not_after_ms: int | None = None

    def valid_at(self, time_ms: int) -> bool:
        """Within the key's validity window (rotation keeps two keys valid for an overlap)."""
        if self.not_before_ms is not None and time_ms < self.not_before_ms:
            return False
        return self.not_after_ms is None or time_ms <= self.not_after_ms


@dataclass(frozen=True)
class Agency:
    """An agency that publishes concern events on its own ingest topic."""

    id: str
    name: str
    type: str
    local_authorities: frozenset[str]
    keys: tuple[AgencyKey, ...] = ()
    #: Who signs its events: ``agency`` (its own key, the default) or ``gateway``
    #: (it delegates signing to the HTTPS gateway, which holds a key registered
    #: under ``keys`` and signs only for agencies that say so here).
    signing: str = "agency"
    #: Data classes whose consultation the agency is told of: when a team reads
    #: (in the workspace) a copy of one of its concerns that shares any of these,
    #: a CONSULTED notice goes to its status topic (``notify_on_consultation``;
    #: ``all`` in the file is every class). Empty: not told.
    notify_on_consultation: frozenset[str] = frozenset()

    def notified_of(self, classes_shared: Iterable[str]) -> bool:
        """Whether a consultation of a copy sharing ``classes_shared`` is notified."""
        return not self.notify_on_consultation.isdisjoint(classes_shared)

    def ingest_topic(self, topics: Topics = DEFAULT) -> str:
        """The ingest topic is derived from the id, never configured separately."""
        return topics.ingest(self.id)


@dataclass(frozen=True)
class Role:
    """A safeguarding role and the data classes it needs to know."""

    id: str
    description: str
    data_classes: frozenset[str]
    #: A competent authority processing for law enforcement purposes (DPA 2018
    #: Part 3), e.g. police: its lawful basis without consent is Sch 8 para 4.
    law_enforcement: bool = False


@dataclass(frozen=True)
class FeedKey:
    """A subscriber's public feed key (HPKE, broker.signing.feeds), checked at load.

    ``not_before_ms``/``not_after_ms`` bound when the router seals new copies to
    it (rotation); a reader opens old copies with the old key regardless.
    """

    id: str
    kem: str
    public_key: str
    not_before_ms: int | None = None
    not_after_ms: int | None = None


@dataclass(frozen=True)
class Subscriber:
    """A team that receives a minimised copy of events on its own feed topic."""

    id: str
    organisation: str
    roles: tuple[str, ...]
    local_authorities: frozenset[str]
    purposes: frozenset[str]
    law_enforcement: bool
    description: str = ""
    feed_keys: tuple[FeedKey, ...] = ()
    """HPKE public keys: if any, its feed copies are sealed to the current one."""
    escalate_to: tuple[str, ...] = ()
    """Subscribers told, tier by tier, when one of this subscriber's clocks is overdue."""

    def feed_topic(self, topics: Topics = DEFAULT) -> str:
        """The feed topic is derived from the id, never configured separately."""
        return topics.feed(self.id)


@dataclass(frozen=True)
class Rule:
    """One ordered rule, as written and as resolved against the registry.

    ``None`` in a condition means "any". ``agencies`` and ``subscribers`` are
    the registry entries the rule can ever apply to (resolved at load from the
    agency ids/types and subscriber ids/roles/purpose it names).
    """

    id: str
    index: int
    line: int
    column: int
    description: str
    effect: str  # "share" | "withhold"
    # -- conditions ---------------------------------------------------------
    source_agencies: frozenset[str] | None
    source_agency_types: frozenset[str] | None
    categories: frozenset[str] | None
    payload_types: frozenset[str] | None
    subscriber_ids: frozenset[str] | None
    subscriber_roles: frozenset[str] | None
    min_risk: str | None
    break_glass: bool | None
    cross_area: bool
    # -- outcome ------------------------------------------------------------
    purpose: str | None
    override_min_risk: str | None  # None: sharing without consent not permitted
    data_classes: frozenset[str] | None  # None: the roles' grants, not narrowed
    explicit_grants: frozenset[str]
    obligations: tuple[ObligationCode, ...]
    reason: str
    # -- resolved -----------------------------------------------------------
    agencies: frozenset[str]
    subscribers: frozenset[str]

    @property
    def shares(self) -> bool:
        return self.effect == "share"

    @property
    def place(self) -> str:
        return f"line {self.line}:{self.column}"


@dataclass(frozen=True)
class ConsentRecorder:
    """An entitlement of the policy's ``consent`` section: these agencies may record
    consent (GIVEN, REFUSED, WITHDRAWN) for these purposes, for children of their
    own local authorities; with ``withdraw_others`` they may also withdraw (or record
    anew over) a record another agency made that is still in force."""

    id: str
    line: int
    column: int
    description: str
    agencies: frozenset[str]  # resolved from the ids and types the entry names
    purposes: frozenset[str]
    withdraw_others: bool = False
