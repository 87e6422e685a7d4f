"""A decision in words a data protection officer can follow.

Answers the questions of docs/DESIGN.md ("a record of what was shared, with whom,
when, why, on which basis — and of decisions *not* to share"): what was
shared, what was redacted and why, on which lawful basis, which consent or
which reason for sharing without it, and what must happen next.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime

from broker.policy.consent import ConsentStatus
from broker.policy.decision import DEFAULT_DENY, Decision
from broker.policy.engine import Policy
from broker.policy.model import Rule
from broker.policy.vocabulary import (
    ALWAYS_SHARED,
    PROTECTED_CLASSES,
    NoConsentReason,
    Outcome,
)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _list(items: object) -> str:
    seq = sorted(str(i) for i in items)  # type: ignore[attr-defined]
    if not seq:
        return "none"
    return ", ".join(seq)


def describe_rule(rule: Rule) -> list[str]:
    """The rule's conditions and outcome, one line each."""
    lines = [f"Rule {rule.id!r} ({rule.place} of the policy file, rule {rule.index + 1}):"]
    if rule.description:
        lines.append(f"  {rule.description.strip()}")
    conds: list[str] = []
    if rule.source_agencies is not None:
        conds.append(f"the source agency is one of {_list(rule.source_agencies)}")
    if rule.source_agency_types is not None:
        conds.append(f"the source agency is of type {_list(rule.source_agency_types)}")
    if rule.categories is not None:
        conds.append(f"the concern category is {_list(rule.categories)}")
    if rule.payload_types is not None:
        conds.append(f"the details are a {_list(rule.payload_types)} record")
    if rule.subscriber_ids is not None:
        conds.append(f"the recipient is {_list(rule.subscriber_ids)}")
    if rule.subscriber_roles is not None:
        conds.append(f"the recipient has the role {_list(rule.subscriber_roles)}")
    if rule.purpose is not None:
        conds.append(f"the recipient is registered for the purpose {rule.purpose}")
    if rule.min_risk is not None:
        conds.append(f"the risk is {rule.min_risk} or above")
    if rule.break_glass is True:
        conds.append("the source agency declared an emergency (break-glass)")
    elif rule.break_glass is False:
        conds.append("it is not an emergency (break-glass) share")
    conds.append(
        "the recipient may be outside the child's local authority"
        if rule.cross_area
        else "the recipient serves the child's local authority"
    )
    lines.append("  It applies when " + "; ".join(conds) + ".")
    if not rule.shares:
        lines.append(f"  It withholds: {rule.reason}")
        return lines
    basis = f"  It shares with consent for {rule.purpose}"
    if rule.override_min_risk is not None:
        basis += (
            f", or without consent when the risk is {rule.override_min_risk} or above and the"
            " source agency gives a reason and a written justification"
        )
    else:
        basis += " only (never without consent)"
    lines.append(basis + ".")
    if rule.data_classes is not None:
        lines.append(f"  It narrows sharing to: {_list(rule.data_classes)}.")
    if rule.explicit_grants:
        lines.append(f"  It explicitly grants: {_list(rule.explicit_grants)}.")
    if rule.obligations:
        lines.append(f"  It imposes: {_list(rule.obligations)}.")
    return lines


def _why_redacted(label: str, decision: Decision, policy: Policy, rule: Rule | None) -> str:
    if decision.outcome is Outcome.WITHHOLD:
        return "nothing is shared with this recipient"
    if label in PROTECTED_CLASSES and (rule is None or label not in rule.explicit_grants):
        who = "the referrer" if label == "referrer" else "other people (third parties)"
        return (
            f"identities of {who} are redacted unless a rule explicitly grants them,"
            " and this rule does not"
        )
    sub = policy.subscriber(decision.subscriber)
    roles = list(sub.roles) if sub is not None else []
    if rule is not None and rule.subscriber_roles is not None:
        roles = [r for r in roles if r in rule.subscriber_roles]
    granted = set().union(*(policy.roles[r].data_classes for r in roles)) if roles else set()
    if label not in granted and label not in PROTECTED_CLASSES:
        return f"not needed by the role {_list(roles)} (need to know)"
    if rule is not None and rule.data_classes is not None and label not in rule.data_classes:
        return f"rule {rule.id!r} narrows this share to {_list(rule.data_classes)}"
    if decision.consent is not None and decision.consent.data_classes:
        return f"the consent covers only {_list(decision.consent.data_classes)}"
    return "not granted"


def _by_class(paths: tuple[str, ...], policy: Policy) -> dict[str, list[str]]:
    labels = policy.field_classes
    out: dict[str, list[str]] = defaultdict(list)
    for path in paths:
        out[labels.get(path, "unknown")].append(path)
    return dict(sorted(out.items()))


def explain(decision: Decision, policy: Policy) -> str:
    """A plain-words account of ``decision`` under ``policy``."""
    lines: list[str] = []
    sub = policy.subscriber(decision.subscriber)
    if sub is not None:
        who = f"{sub.id} ({sub.organisation}; role {_list(sub.roles)};"
        who += f" serves {_list(sub.local_authorities)})"
    else:
        who = f"{decision.subscriber!r} (not a registered subscriber)"
    shared = decision.outcome is Outcome.SHARE
    lines.append(
        f"Decision: {'SHARE' if shared else 'WITHHOLD'} — event {decision.event_id or '?'}"
    )
    lines.append(f"Recipient: {who}")
    lines.append(f"Decided at: {_when(decision.now_ms)}")
    if policy.digest == decision.policy_digest:
        lines.append(f"Policy: {policy.name} (sha256 {decision.policy_digest})")
    else:
        lines.append(
            f"Policy: decided under sha256 {decision.policy_digest}; WARNING: this explanation"
            f" reads a different policy version (sha256 {policy.digest})"
        )
    lines.append("")
    lines.append(f"Why: {decision.reason} [{decision.reason_code}]")

    rule = policy.rule(decision.rule_id) if decision.rule_id != DEFAULT_DENY else None
    if decision.rule_id == DEFAULT_DENY:
        lines.append(
            "Rule: none applied — the policy withholds by default (no rule matched, or the"
            " event or recipient is not registered)."
        )
    elif rule is not None:
        lines.extend(describe_rule(rule))
    lines.append("")

    if shared:
        basis = decision.lawful_basis
        if basis is not None:
            lines.append(f"Lawful basis: {basis.text} [{basis}]")
        if decision.consent_ref is not None:
            lines.append(
                f"Consent relied on: record {decision.consent_ref} (purpose {decision.purpose})."
                " If it is withdrawn or expires, later events are no longer shared on it."
            )
        elif decision.no_consent_reason is not None:
            reason = NoConsentReason(decision.no_consent_reason)
            seen = decision.consent_status
            overridden = (
                f" The consent record {decision.consent.record_id} ({seen.lower()}) was overridden."
                if decision.consent is not None
                and decision.consent.record is not None
                and seen is not ConsentStatus.GIVEN
                else ""
            )
            lines.append(
                f"Shared without consent: {reason.text}. The source agency's written"
                f" justification is held with the event.{overridden}"
            )
        classes = sorted(decision.data_classes_shared - {ALWAYS_SHARED})
        lines.append(
            "Shared: routing facts (metadata, always kept)"
            + (f" and {', '.join(classes)}." if classes else " only.")
        )
        for label, paths in _by_class(decision.fields_shared, policy).items():
            lines.append(f"  + {label}: {', '.join(paths)}")
        if decision.fields_redacted:
            lines.append("Redacted, and why:")
            for label, paths in _by_class(decision.fields_redacted, policy).items():
                lines.append(f"  - {label}: {', '.join(paths)}")
                lines.append(f"      because {_why_redacted(label, decision, policy, rule)}")
        else:
            lines.append("Redacted: nothing (the recipient may see every field present).")
    else:
        lines.append("Shared: nothing. This decision not to share is recorded in the audit log.")
        if decision.consent is not None and decision.consent.record is not None:
            lines.append(
                f"Consent position: {decision.consent_status.lower()}"
                f" (record {decision.consent.record_id})."
            )
        if decision.fields_redacted:
            counts = {k: len(v) for k, v in _by_class(decision.fields_redacted, policy).items()}
            lines.append(
                f"Withheld: all {len(decision.fields_redacted)} fields present in the event ("
                + ", ".join(f"{k} {n}" for k, n in counts.items())
                + ")."
            )

    if decision.obligations:
        lines.append("Obligations:")
        for o in decision.obligations:
            lines.append(f"  {o.code}: due {_when(o.due_at_ms)} — {o.text}")
    elif shared:
        lines.append("Obligations: none.")
    if decision.break_glass and not shared:
        lines.append("The source agency declared an emergency (break-glass); no share resulted.")
    return "\n".join(lines) + "\n"
