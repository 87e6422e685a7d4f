"""The router's audit leaves: a decision and an event in, the leaf's bytes out.

The one interface between routing and the audit package. The writer keeps a
:class:`~broker.audit.leaf_template.LeafTemplate` per distinct decision (its
members are the same for every event the decision applies to) and writes each
leaf from it and the event's :class:`~broker.audit.leaf_template.LeafEvent`;
where either declines a value (not a plain, valid one) it writes the leaf from
its dict of fields with :func:`~broker.audit.leaf_template.leaf_bytes`, which
gives the same bytes or raises :class:`~broker.audit.exceptions.MalformedError`
saying what is wrong (fail closed: the router's transaction fails).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from broker.audit.leaf_template import LeafEvent, LeafTemplate, leaf_bytes

if TYPE_CHECKING:
    from broker.policy import Decision

__all__ = ["AuditEvent", "LeafWriter"]

# Distinct decisions (subscriber, rule, grant, policy) kept; a policy has a few dozen.
_MAX_KEPT = 4096


class AuditEvent:
    """What every leaf of one event shares: its ids, checked and written once."""

    __slots__ = ("event_id", "event_digest", "source_agency", "subject", "_part")

    def __init__(self, event_id: str, event_digest: str, source_agency: str, subject: str):
        self.event_id, self.event_digest = event_id, event_digest
        self.source_agency, self.subject = source_agency, subject
        self._part = LeafEvent.checked(
            event_id=event_id, event_digest=event_digest, source_agency=source_agency,
            subject=subject,
        )  # fmt: skip


class LeafWriter:
    """Leaf bytes for each thing the router decides about an event."""

    def __init__(self) -> None:
        # Per decision: its leaves' checked template, or None where it declined.
        self._templates: dict[tuple[Any, ...], LeafTemplate | None] = {}
        self._sorted: dict[Any, tuple[str, ...]] = {}  # a grant's classes, sorted

    @staticmethod
    def event(
        *, event_id: str, event_digest: str, source_agency: str, subject: str = ""
    ) -> AuditEvent:
        return AuditEvent(event_id, event_digest, source_agency, subject)

    def decision(self, decision: Decision, event: AuditEvent, delivered: str | None) -> bytes:
        """The leaf of one subscriber's decision: SHARED with the digest of the copy
        ``delivered``, or WITHHELD when that is None."""
        outcome = str(decision.outcome)
        reason = str(decision.reason_code)
        due = decision.obligations
        obligations = [f"{o.code}@{o.due_at_ms}" for o in due] if due else []
        template = self._template_of(decision, outcome, reason, delivered is not None)
        if template is not None and event._part is not None:
            leaf = template.fill(
                event._part,
                time_ms=decision.now_ms,
                delivered_digest=delivered,
                consent_ref=decision.consent_ref if delivered is not None else None,
                obligations=obligations if delivered is not None else (),
            )
            if leaf is not None:
                return leaf.data
        fields: dict[str, Any] = {
            "time_ms": decision.now_ms,
            "event_id": event.event_id,
            "event_digest": event.event_digest,
            "source_agency": event.source_agency,
            "recipient": decision.subscriber,
            "outcome": outcome,
            "rule_id": decision.rule_id,
            "reason": reason,
            "policy_digest": decision.policy_digest,
            "subject": event.subject,
        }
        if delivered is None:
            fields["kind"] = "WITHHELD"
            return leaf_bytes(fields)
        fields.update(
            kind="SHARED",
            lawful_basis=str(decision.lawful_basis or ""),
            data_classes_shared=self._sorted_once(decision.data_classes_shared),
            fields_redacted=self._sorted_once(decision.fields_redacted),
            delivered_digest=delivered,
            consent_ref=decision.consent_ref,
            obligations=obligations,
        )
        return leaf_bytes(fields)

    @staticmethod
    def duplicate(event: AuditEvent, *, time_ms: int) -> bytes:
        """The leaf of an event id seen before (nothing shared)."""
        return leaf_bytes({
            "kind": "DUPLICATE",
            "time_ms": time_ms,
            "event_id": event.event_id,
            "event_digest": event.event_digest,
            "source_agency": event.source_agency,
            "subject": event.subject,
            "reason": "DUPLICATE_EVENT_ID",
        })

    @staticmethod
    def quarantined(
        *, time_ms: int, event_id: str, event_digest: str, source_agency: str, reason: str
    ) -> bytes:
        """The leaf of a message quarantined with ``reason``."""
        return leaf_bytes({
            "kind": "QUARANTINED",
            "time_ms": time_ms,
            "event_id": event_id,
            "event_digest": event_digest,
            "source_agency": source_agency,
            "reason": reason,
        })

    @staticmethod
    def other(fields: Mapping[str, Any]) -> bytes:
        """The leaf of any other kind (a CONSENT record, say), from its fields."""
        return leaf_bytes(fields)

    def _template_of(
        self, decision: Decision, outcome: str, reason: str, shared: bool
    ) -> LeafTemplate | None:
        """The decision's leaf template, made once per distinct decision and kept.

        The key holds every value the template is made of (a WITHHELD key is
        shorter than a SHARED one, so the two never meet). A value that cannot
        be a key (unhashable) is none the template vouches for: None, and the
        leaf is written from its fields.
        """
        try:
            if shared:
                classes = decision.data_classes_shared
                redacted = decision.fields_redacted
                key: tuple[Any, ...] = (
                    decision.subscriber, outcome, decision.rule_id, reason,
                    decision.policy_digest, str(decision.lawful_basis or ""),
                    classes if type(classes) is frozenset else frozenset(classes),
                    redacted if type(redacted) is tuple else tuple(redacted),
                )  # fmt: skip
            else:
                key = (
                    decision.subscriber, outcome, decision.rule_id, reason,
                    decision.policy_digest,
                )  # fmt: skip
            return self._templates[key]
        except KeyError:
            pass
        except TypeError:
            return None
        template = self._template(decision, outcome, reason, shared)
        if len(self._templates) >= _MAX_KEPT:
            self._templates.clear()
        self._templates[key] = template
        return template

    def _template(
        self, decision: Decision, outcome: str, reason: str, shared: bool
    ) -> LeafTemplate | None:
        """A decision's leaf template: the members its dict leaf would have had."""
        if not shared:
            return LeafTemplate.checked(
                kind="WITHHELD",
                recipient=decision.subscriber,
                outcome=outcome,
                rule_id=decision.rule_id,
                reason=reason,
                policy_digest=decision.policy_digest,
            )
        return LeafTemplate.checked(
            kind="SHARED",
            recipient=decision.subscriber,
            outcome=outcome,
            rule_id=decision.rule_id,
            reason=reason,
            policy_digest=decision.policy_digest,
            lawful_basis=str(decision.lawful_basis or ""),
            data_classes_shared=self._sorted_once(decision.data_classes_shared),
            fields_redacted=self._sorted_once(decision.fields_redacted),
        )

    def _sorted_once(self, values: Any) -> tuple[str, ...]:
        """``values`` sorted; the few grants a policy makes are sorted once each."""
        key = values if isinstance(values, frozenset | tuple) else tuple(values)
        found = self._sorted.get(key)
        if found is None:
            found = tuple(sorted(key))
            if len(self._sorted) >= _MAX_KEPT:
                self._sorted.clear()
            self._sorted[key] = found
        return found
