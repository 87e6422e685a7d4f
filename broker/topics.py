"""The one place that names Kafka topics and consumer groups (docs/DESIGN.md, "Kafka topics").

| topic                      | key               | written by     | read by         |
|----------------------------|-------------------|----------------|-----------------|
| <ns>.ingest.<agency>       | subject pseudonym | that agency    | router          |
| <ns>.consent.<agency>      | subject + purpose | that agency    | router          |
| <ns>.feed.<subscriber>     | subject pseudonym | router         | that subscriber |
| <ns>.quarantine            | -                 | router         | operators       |
| <ns>.audit                 | -                 | router         | checkpointer    |
| <ns>.audit.checkpoints     | log origin        | checkpointer,  | everyone        |
|                            |                   | witnesses      |                 |
| <ns>.loop.clock-starts     | event id          | router         | loop service    |
| <ns>.loop.clocks (compact) | clock id          | loop service   | loop service    |
| <ns>.ack.<subscriber>      | event id          | that subscriber| loop service    |
| <ns>.notices.<subscriber>  | event id          | loop service   | that subscriber |
| <ns>.status.<agency>       | event id          | loop service   | that agency     |
| <ns>.gateway.consultations | subscriber        | gateway        | DPOs, auditors  |
| <ns>.identity-decisions.<subscriber> | pseudonym | that subscriber | router       |
| <ns>.identity-reviews.<subscriber>   | pseudonym | router         | that subscriber |

Consent topics are per recording agency, as ingest topics are, and kept (not
compacted): see README "Topics" for why. The namespace ``<ns>`` is
``safeshare`` in production; tests give each test its own namespace so that
topics and groups never collide.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_NAMESPACE = "safeshare"

# Agency and subscriber ids become part of topic names, ACL resource names and
# consumer group ids, so they are restricted to a safe alphabet.
_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_NAMESPACE = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,100}$")


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid agency/subscriber id, else raise ValueError."""
    if not isinstance(value, str) or not _ID.match(value):
        raise ValueError(
            f"invalid {kind} id {value!r}: use 1-63 lowercase letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return value


def _owner(topic: str, prefix: str) -> str | None:
    """The agency or subscriber id after ``prefix`` in ``topic``; None if not one of those."""
    return topic[len(prefix):] if topic.startswith(prefix) else None


def _pattern(prefix: str) -> str:
    """A regular expression matching every topic named ``prefix`` + an id (to subscribe by)."""
    return "^" + re.escape(prefix) + r"[a-z0-9][a-z0-9_-]*$"


@dataclass(frozen=True)
class Topics:
    """Topic and group names under one namespace."""

    namespace: str = DEFAULT_NAMESPACE

    def __post_init__(self) -> None:
        if not _NAMESPACE.match(self.namespace):
            raise ValueError(f"invalid topic namespace {self.namespace!r}")

    # -- topics -------------------------------------------------------------
    @property
    def ingest_prefix(self) -> str:
        return f"{self.namespace}.ingest."

    @property
    def ingest_pattern(self) -> str:
        """Regex matching every ingest topic (for pattern subscription)."""
        return _pattern(self.ingest_prefix)

    def ingest(self, agency: str) -> str:
        """The topic an agency publishes its concern events to."""
        return self.ingest_prefix + check_id("agency", agency)

    def agency_of_ingest(self, topic: str) -> str | None:
        """The agency that owns an ingest topic, or None if ``topic`` is not one."""
        return _owner(topic, self.ingest_prefix)

    @property
    def feed_prefix(self) -> str:
        return f"{self.namespace}.feed."

    def feed(self, subscriber: str) -> str:
        """The topic a subscriber reads its minimised copies from."""
        return self.feed_prefix + check_id("subscriber", subscriber)

    @property
    def consent_prefix(self) -> str:
        return f"{self.namespace}.consent."

    def consent(self, agency: str) -> str:
        """The topic an agency records consent on: only that agency may write it (ACLs), and
        the router quarantines a record on it that names another agency (AGENCY_MISMATCH)."""
        return self.consent_prefix + check_id("agency", agency)

    def agency_of_consent(self, topic: str) -> str | None:
        """The agency that owns a consent topic, or None if ``topic`` is not one."""
        return _owner(topic, self.consent_prefix)

    @property
    def identity(self) -> str:
        """The identity index (compacted, sealed values; broker/identity/store.py)."""
        return f"{self.namespace}.identity"

    @property
    def identity_decisions_prefix(self) -> str:
        return f"{self.namespace}.identity-decisions."

    def identity_decisions(self, subscriber: str) -> str:
        """Where a subscriber's people link and unlink pseudonyms (IdentityDecision):
        only that subscriber may write it (ACLs); the router applies what the
        policy's ``identity.deciders`` entitles and quarantines the rest."""
        return self.identity_decisions_prefix + check_id("subscriber", subscriber)

    def subscriber_of_identity_decisions(self, topic: str) -> str | None:
        """The subscriber that owns an identity decisions topic, or None."""
        return _owner(topic, self.identity_decisions_prefix)

    @property
    def identity_reviews_prefix(self) -> str:
        return f"{self.namespace}.identity-reviews."

    def identity_reviews(self, subscriber: str) -> str:
        """Review items (IdentityReview) for a deciding subscriber: written by the
        router with the event it routed under a provisional pseudonym."""
        return self.identity_reviews_prefix + check_id("subscriber", subscriber)

    @property
    def quarantine(self) -> str:
        return f"{self.namespace}.quarantine"

    @property
    def audit(self) -> str:
        return f"{self.namespace}.audit"

    @property
    def audit_checkpoints(self) -> str:
        return f"{self.namespace}.audit.checkpoints"

    @property
    def consultations(self) -> str:
        """The HTTPS gateway's record of every feed read and refused call (broker/gateway)."""
        return f"{self.namespace}.gateway.consultations"

    # -- closing the loop (broker/loop) -----------------------------------------
    @property
    def clock_starts(self) -> str:
        """Clocks the router starts as it shares (ClockRecord, keyed by event id)."""
        return f"{self.namespace}.loop.clock-starts"

    @property
    def clocks(self) -> str:
        """The clock changelog (compacted; partition p belongs to input partition p)."""
        return f"{self.namespace}.loop.clocks"

    @property
    def ack_prefix(self) -> str:
        return f"{self.namespace}.ack."

    def acks(self, subscriber: str) -> str:
        """Where a subscriber acknowledges what it received (keyed by event id)."""
        return self.ack_prefix + check_id("subscriber", subscriber)

    @property
    def ack_pattern(self) -> str:
        return _pattern(self.ack_prefix)

    def subscriber_of_acks(self, topic: str) -> str | None:
        return _owner(topic, self.ack_prefix)

    @property
    def notices_prefix(self) -> str:
        return f"{self.namespace}.notices."

    def notices(self, subscriber: str) -> str:
        """Escalations and access notices for a subscriber."""
        return self.notices_prefix + check_id("subscriber", subscriber)

    @property
    def status_prefix(self) -> str:
        return f"{self.namespace}.status."

    def status(self, agency: str) -> str:
        """What happened to what an agency published: receipt, triage, outcome."""
        return self.status_prefix + check_id("agency", agency)

    @property
    def loop_group(self) -> str:
        return f"{self.namespace}.loop"

    def loop_transactional_id(self, instance: str) -> str:
        return f"{self.namespace}.loop.{instance}"

    # -- consumer groups and transactional ids ---------------------------------
    @property
    def router_group(self) -> str:
        """Consumer group shared by every router process."""
        return f"{self.namespace}.router"

    def router_transactional_id(self, instance: str) -> str:
        """Stable per-instance transactional id, so a restarted router fences its zombie."""
        return f"{self.namespace}.router.{instance}"

    def feed_group(self, subscriber: str) -> str:
        """Consumer group a subscriber reads its own feed with."""
        return f"{self.namespace}.subscriber.{check_id('subscriber', subscriber)}"

    @property
    def checkpointer_group(self) -> str:
        return f"{self.namespace}.checkpointer"


DEFAULT = Topics()
