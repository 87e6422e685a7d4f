"""The decision value: what one subscriber gets of one event, and why.

A decision is a frozen value, never an exception: a share that is withheld is a
normal outcome that the audit log records with its reason (docs/DESIGN.md: "a record
... of decisions *not* to share").
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, fields
from typing import Any

from broker.policy.consent import ConsentState, ConsentStatus
from broker.policy.vocabulary import LawfulBasis, ObligationCode, Outcome, ReasonCode

DEFAULT_DENY = "default-deny"


@dataclass(frozen=True)
class Obligation:
    """A duty created by a share, due by ``due_at_ms`` (UTC ms)."""

    code: ObligationCode
    due_at_ms: int

    @property
    def text(self) -> str:
        return self.code.text


@dataclass(frozen=True)
class Decision:
    """One subscriber's decision for one event.

    ``data_classes_shared`` always contains ``metadata`` on a share and is empty
    on a withhold; ``fields_shared`` and ``fields_redacted`` list the field paths
    present (non-null) in the event, split by that set. ``lawful_basis`` is set
    exactly when the outcome is SHARE. ``consent_ref`` is the event id of the
    consent record relied on (only when the basis is consent); ``consent`` is
    what the consent lookup found, also when it was overridden or not relied on.
    """

    subscriber: str
    outcome: Outcome
    rule_id: str
    reason_code: ReasonCode
    reason: str
    policy_digest: str
    now_ms: int
    event_id: str | None = None
    lawful_basis: LawfulBasis | None = None
    data_classes_shared: frozenset[str] = frozenset()
    fields_shared: tuple[str, ...] = ()
    fields_redacted: tuple[str, ...] = ()
    obligations: tuple[Obligation, ...] = ()
    consent_ref: str | None = None
    consent: ConsentState | None = None
    no_consent_reason: str | None = None
    break_glass: bool = False
    purpose: str | None = None

    @property
    def shared(self) -> bool:
        return self.outcome is Outcome.SHARE

    @property
    def consent_status(self) -> ConsentStatus:
        return self.consent.status if self.consent is not None else ConsentStatus.NONE

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready, deterministic form (sorted lists; codes as strings; no personal data)."""
        return {
            "subscriber": self.subscriber,
            "outcome": str(self.outcome),
            "rule_id": self.rule_id,
            "reason_code": str(self.reason_code),
            "reason": self.reason,
            "lawful_basis": str(self.lawful_basis) if self.lawful_basis is not None else None,
            "data_classes_shared": sorted(self.data_classes_shared),
            "fields_shared": list(self.fields_shared),
            "fields_redacted": list(self.fields_redacted),
            "obligations": [
                {"code": str(o.code), "due_at_ms": o.due_at_ms} for o in self.obligations
            ],
            "policy_digest": self.policy_digest,
            "consent_ref": self.consent_ref,
            "consent_status": str(self.consent_status),
            "consent_record_seen": self.consent.record_id if self.consent is not None else None,
            "no_consent_reason": self.no_consent_reason,
            "break_glass": self.break_glass,
            "purpose": self.purpose,
            "event_id": self.event_id,
            "now_ms": self.now_ms,
        }


_DEFAULTS: dict[str, Any] = {
    f.name: f.default for f in fields(Decision) if f.default is not MISSING
}


def decision_fields(**values: Any) -> dict[str, Any]:
    """Every field of a :class:`Decision`, by name: the defaults, overridden by ``values``.

    The engine keeps such a dict for the part of a decision fixed before the event
    is known (subscriber, rule, reason for a rule's withhold, digest...) and
    completes a copy of it per event (see :func:`from_fields`).
    """
    state = dict(_DEFAULTS)
    state.update(values)
    return state


def from_fields(state: dict[str, Any]) -> Decision:
    """The :class:`Decision` whose fields are ``state``: every field, the dict taken as is.

    A frozen dataclass's ``__init__`` writes each of the 19 fields through
    ``object.__setattr__``, a large share of the decision time with ten
    subscribers per event. This sets the instance dict in one write. The result is
    the same value: equal to, and hashing like, ``Decision(**state)``.
    """
    obj = object.__new__(Decision)
    object.__setattr__(obj, "__dict__", state)
    return obj

