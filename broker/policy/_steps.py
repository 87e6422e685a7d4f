"""The plain decision steps: one subscriber at a time, as the engine's docstring reads.

:class:`DecisionSteps` holds the steps of :mod:`broker.policy.engine`'s
docstring written plainly (read the facts, match a rule, apply it: consent or
the override, then need to know). It is the reference the compiled plans
(:mod:`broker.policy._plans`) are tested against, and the path any event that
is not shaped as the codec decodes it takes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from broker._memo import BoundedMemo
from broker.policy._check import Checked
from broker.policy._present import Node, fields_present
from broker.policy.consent import NO_CONSENT, ConsentLookup, ConsentState, ConsentStatus
from broker.policy.decision import (
    DEFAULT_DENY,
    Decision,
    Obligation,
    decision_fields,
    from_fields,
)
from broker.policy.model import Rule, Subscriber
from broker.policy.vocabulary import (
    ALWAYS_SHARED,
    RISK_LEVELS,
    RISK_RANK,
    LawfulBasis,
    NoConsentReason,
    ObligationCode,
    Outcome,
    ReasonCode,
)

_ALWAYS = frozenset({ALWAYS_SHARED})
_REASONS = {str(r): r for r in NoConsentReason}
_STATUS_CODE = {
    ConsentStatus.NONE: ReasonCode.NO_CONSENT,
    ConsentStatus.REFUSED: ReasonCode.CONSENT_REFUSED,
    ConsentStatus.WITHDRAWN: ReasonCode.CONSENT_WITHDRAWN,
    ConsentStatus.EXPIRED: ReasonCode.CONSENT_EXPIRED,
}
_STATUS_WORDS = {
    ConsentStatus.NONE: "no consent is recorded",
    ConsentStatus.REFUSED: "consent was refused",
    ConsentStatus.WITHDRAWN: "consent was withdrawn",
    ConsentStatus.EXPIRED: "the consent has expired",
    ConsentStatus.GIVEN: "consent is given",
}
_REFUSALS = (ConsentStatus.REFUSED, ConsentStatus.WITHDRAWN)


class _Facts(NamedTuple):
    """What policy reads from one event, extracted once per event."""

    routing: tuple[str, str, str | None, str, bool, str | None]  # the key of its plan
    event_id: str
    agency_id: str
    category: str
    payload_type: str | None
    risk: str
    risk_rank: int
    subject: str | None
    local_authority: str | None
    reason: NoConsentReason | None
    reason_raw: str | None
    justified: bool
    break_glass: bool
    present: int  # bit set of the field paths holding a value (see Policy._paths)


@dataclass(frozen=True, slots=True)
class _Target:
    """A rule precompiled for one subscriber it can apply to."""

    rule: Rule
    agencies: frozenset[str]
    categories: frozenset[str] | None
    payload_types: frozenset[str] | None
    min_rank: int
    break_glass: bool | None
    cross_area: bool
    roles: tuple[str, ...]  # the subscriber's roles the rule matched on
    classes: frozenset[str]  # data classes before consent scope (metadata included)
    override_rank: int | None


class DecisionSteps:
    """The plain path of :class:`broker.policy.engine.Policy` (a base class of it)."""

    _c: Checked
    _digest: str
    _leaves: dict[str, str]
    _paths_in_order: tuple[str, ...]
    _root: Node
    _targets: dict[str, tuple[_Target, ...]]
    _path_sets: BoundedMemo[int, tuple[str, ...]]

    def _compile(self, rule: Rule, sub: Subscriber) -> _Target:
        roles = tuple(
            r for r in sub.roles if rule.subscriber_roles is None or r in rule.subscriber_roles
        )
        granted: set[str] = set()
        for r in roles:
            granted |= self._c.roles[r].data_classes
        if rule.data_classes is not None:
            granted &= rule.data_classes
        classes = frozenset(granted | rule.explicit_grants | _ALWAYS)
        return _Target(
            rule=rule,
            agencies=rule.agencies,
            categories=rule.categories,
            payload_types=rule.payload_types,
            min_rank=RISK_RANK[rule.min_risk or "LOW"],
            break_glass=rule.break_glass,
            cross_area=rule.cross_area,
            roles=roles,
            classes=classes,
            override_rank=(
                RISK_RANK[rule.override_min_risk] if rule.override_min_risk is not None else None
            ),
        )

    def _withhold(
        self,
        subscriber: str,
        code: ReasonCode,
        text: str,
        *,
        now_ms: int,
        event_id: str | None,
        rule: Rule | None = None,
        fields_redacted: tuple[str, ...] = (),
        consent: ConsentState | None = None,
        break_glass: bool = False,
    ) -> Decision:
        """A decision to withhold, by ``rule`` (None: before any rule, or by default deny).

        The one place a withhold is made: the compiled path keeps such decisions
        as templates (:meth:`_template`) and fills in the event's fields.
        """
        return from_fields(
            decision_fields(
                subscriber=subscriber,
                outcome=Outcome.WITHHOLD,
                rule_id=DEFAULT_DENY if rule is None else rule.id,
                reason_code=code,
                reason=text,
                policy_digest=self._digest,
                now_ms=now_ms,
                event_id=event_id,
                fields_redacted=fields_redacted,
                consent=consent,
                break_glass=break_glass,
                purpose=None if rule is None else rule.purpose,
            )
        )

    def _facts(self, event: Mapping[str, Any], now_ms: int) -> _Facts | Decision:
        """Read the routing facts; a withhold template (subscriber "") if they cannot be had."""
        event_id = _event_id(event)
        try:
            source = event["source"]
            agency_id = source["agency_id"]
            subject = event["subject"]
            risk = event["risk_level"]
            category = event["category"]
            if not isinstance(agency_id, str) or not isinstance(category, str):
                raise TypeError("agency id and category must be strings")
            if risk not in RISK_RANK:
                raise ValueError(f"unknown risk level {risk!r}")
            sharing = event.get("sharing") or {}
            payload = event.get("payload")
            local_authority = subject.get("local_authority")
            pseudonym = subject.get("pseudonym")
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._withhold(
                "",
                ReasonCode.MALFORMED_EVENT,
                f"the event lacks the facts policy needs ({exc}); nothing is shared.",
                now_ms=now_ms,
                event_id=event_id,
            )
        if agency_id not in self._c.agencies:
            return self._withhold(
                "",
                ReasonCode.UNKNOWN_AGENCY,
                f"the source agency {agency_id!r} is not registered in this policy;"
                " nothing it sends is shared.",
                now_ms=now_ms,
                event_id=event_id,
            )
        payload_type = None
        if isinstance(payload, tuple) and len(payload) == 2 and isinstance(payload[0], str):
            payload_type = payload[0].rsplit(".", 1)[-1]
        if type(sharing) is dict or isinstance(sharing, Mapping):
            reason_raw = sharing.get("no_consent_reason")
            justification = sharing.get("justification")
            break_glass = sharing.get("break_glass") is True
        else:
            reason_raw = justification = None
            break_glass = False
        if reason_raw is not None:
            reason_raw = str(reason_raw)
        risk = str(risk)
        if not isinstance(local_authority, str):
            local_authority = None
        return _Facts(
            (agency_id, category, payload_type, risk, break_glass, local_authority),
            event_id or "",
            agency_id,
            category,
            payload_type,
            risk,
            RISK_RANK[risk],
            pseudonym if isinstance(pseudonym, str) and pseudonym else None,
            local_authority,
            _REASONS.get(reason_raw) if reason_raw is not None else None,
            reason_raw,
            isinstance(justification, str) and bool(justification.strip()),
            break_glass,
            fields_present(event, self._root),
        )

    def _paths(self, bits: int) -> tuple[str, ...]:
        """The field paths of a bit set, sorted (remembered: events come in few shapes)."""
        got = self._path_sets.get(bits)
        if got is None:
            names = self._paths_in_order
            found: list[str] = []
            rest = bits
            while rest:
                low = rest & -rest
                found.append(names[low.bit_length() - 1])
                rest ^= low
            got = tuple(found)
            self._path_sets.remember(bits, got)
        return got

    def _match(self, f: _Facts, sub: Subscriber, in_area: bool) -> _Target | None:
        """The first rule (precompiled for ``sub``) whose conditions the event meets."""
        for t in self._targets[sub.id]:
            if (
                f.agency_id in t.agencies
                and (t.categories is None or f.category in t.categories)
                and (t.payload_types is None or f.payload_type in t.payload_types)
                and f.risk_rank >= t.min_rank
                and (t.break_glass is None or t.break_glass == f.break_glass)
                and (in_area or t.cross_area)
            ):
                return t
        return None

    def _default_deny(self, f: _Facts, sub: Subscriber, in_area: bool) -> tuple[ReasonCode, str]:
        """Why no rule matched: the reason code and text of a default deny."""
        if not in_area:
            return ReasonCode.OUT_OF_AREA, (
                f"{sub.id} serves {_words(sorted(sub.local_authorities))}, not the child's local"
                f" authority ({f.local_authority or 'unknown'}), and no rule permits a"
                " cross-area share of this event."
            )
        return ReasonCode.NO_MATCHING_RULE, (
            f"no rule permits sharing this {f.category} event"
            f"{' (' + f.payload_type + ')' if f.payload_type else ''} from {f.agency_id}"
            f" with {sub.id}; policy withholds by default."
        )

    def decide_all_plainly(
        self, event: Mapping[str, Any], consents: ConsentLookup | None, now_ms: int
    ) -> list[Decision]:
        """What :meth:`decide_all` returns, reached by :meth:`decide`'s plain path.

        The reference the compiled path is tested and measured against (the
        event's facts are read once, as there).
        """
        facts = self._facts(event, now_ms)
        if isinstance(facts, Decision):
            return [_retarget(facts, s) for s in self._c.subscribers]
        return [self._decide(facts, sub, consents, now_ms) for sub in self._c.subscribers.values()]

    # -- the steps of the engine's docstring, as written ----------------------------
    def _decide(
        self, f: _Facts, sub: Subscriber, consents: ConsentLookup | None, now_ms: int
    ) -> Decision:
        in_area = f.local_authority is not None and f.local_authority in sub.local_authorities
        target = self._match(f, sub, in_area)
        if target is not None:
            return self._apply(target, f, sub, consents, now_ms)
        code, text = self._default_deny(f, sub, in_area)
        return self._withhold(
            sub.id,
            code,
            text,
            now_ms=now_ms,
            event_id=f.event_id,
            fields_redacted=self._paths(f.present),
            break_glass=f.break_glass,
        )

    def _apply(
        self,
        t: _Target,
        f: _Facts,
        sub: Subscriber,
        consents: ConsentLookup | None,
        now_ms: int,
    ) -> Decision:
        rule = t.rule
        present = self._paths(f.present)

        def withhold(code: ReasonCode, text: str, consent: ConsentState | None = None) -> Decision:
            return self._withhold(
                sub.id,
                code,
                text,
                now_ms=now_ms,
                event_id=f.event_id,
                rule=rule,
                fields_redacted=present,
                consent=consent,
                break_glass=f.break_glass,
            )

        if not rule.shares:
            return withhold(ReasonCode.RULE_WITHHOLD, rule.reason)

        purpose = rule.purpose
        assert purpose is not None  # the checker guarantees a purpose on share rules
        state = NO_CONSENT
        if consents is not None and f.subject is not None:
            for role in t.roles:
                found = consents.lookup(f.subject, purpose, role, now_ms)
                if found.status is ConsentStatus.GIVEN:
                    state = found
                    break
                if found.status is not ConsentStatus.NONE and state.status is ConsentStatus.NONE:
                    state = found

        if state.status is ConsentStatus.GIVEN:
            classes = t.classes
            if state.data_classes:
                classes = classes & (state.data_classes | _ALWAYS)
            basis = LawfulBasis.CONSENT
            code = ReasonCode.CONSENT_GIVEN
            text = (
                f"consent for purpose {purpose!r} is given (record {state.record_id})"
                + (
                    f" and covers {_words(sorted(state.data_classes))}"
                    if state.data_classes
                    else ""
                )
                + "."
            )
            consent_ref: str | None = state.record_id
            no_consent_reason = None
        else:
            words = _STATUS_WORDS[state.status] + f" for purpose {purpose!r}"
            if state.record_id:
                words += f" (record {state.record_id})"
            if t.override_rank is None:
                return withhold(
                    _STATUS_CODE[state.status],
                    f"{words}, and rule {rule.id!r} does not permit sharing without consent.",
                    state,
                )
            threshold = RISK_LEVELS[t.override_rank]
            if f.risk_rank < t.override_rank:
                return withhold(
                    ReasonCode.OVERRIDE_RISK_TOO_LOW,
                    f"{words}; sharing without consent needs risk {threshold} or above under rule"
                    f" {rule.id!r}, and this event is {f.risk}.",
                    state,
                )
            if f.reason is None:
                got = f" (it gave {f.reason_raw!r}, which is not one)" if f.reason_raw else ""
                return withhold(
                    ReasonCode.OVERRIDE_NO_REASON,
                    f"{words}; sharing without consent needs one of the reasons"
                    f" {_words(sorted(_REASONS), 'or')} from the source agency{got}.",
                    state,
                )
            if not f.justified:
                return withhold(
                    ReasonCode.OVERRIDE_NO_JUSTIFICATION,
                    f"{words}; sharing without consent needs a written justification from the"
                    " source agency, and the event carries none.",
                    state,
                )
            if (
                state.status in _REFUSALS
                and f.reason is not NoConsentReason.WOULD_PREJUDICE_PROTECTION
            ):
                return withhold(
                    ReasonCode.OVERRIDE_REASON_CONTRADICTED,
                    f"{words}; the reason {f.reason} is contradicted by that record (consent"
                    " could be and was sought), so only WOULD_PREJUDICE_PROTECTION can override"
                    " the decision of the child or family.",
                    state,
                )
            classes = t.classes
            basis = (
                LawfulBasis.LAW_ENFORCEMENT_SAFEGUARDING
                if sub.law_enforcement
                else LawfulBasis.SAFEGUARDING
            )
            code = ReasonCode.SHARED_WITHOUT_CONSENT
            text = (
                f"{words}; shared without consent to protect the child: risk {f.risk} is at or"
                f" above {threshold}, the source agency gave the reason {f.reason}"
                f" ({f.reason.text}) and a written justification."
            )
            consent_ref = None
            no_consent_reason = str(f.reason)

        obligations: tuple[Obligation, ...] = ()
        if rule.obligations or f.break_glass:
            codes = set(rule.obligations)
            if f.break_glass:
                codes.add(ObligationCode.REVIEW_WITHIN_72H)
            obligations = tuple(Obligation(c, now_ms + c.due_after_ms) for c in sorted(codes))
        shared = tuple(p for p in present if self._leaves[p] in classes)
        redacted = tuple(p for p in present if self._leaves[p] not in classes)
        return from_fields(
            decision_fields(
                subscriber=sub.id,
                outcome=Outcome.SHARE,
                rule_id=rule.id,
                reason_code=code,
                reason=text,
                policy_digest=self._digest,
                now_ms=now_ms,
                event_id=f.event_id,
                lawful_basis=basis,
                data_classes_shared=classes,
                fields_shared=shared,
                fields_redacted=redacted,
                obligations=obligations,
                consent_ref=consent_ref,
                consent=state,
                no_consent_reason=no_consent_reason,
                break_glass=f.break_glass,
                purpose=purpose,
            )
        )


def _event_id(event: Any) -> str | None:
    try:
        value = event["event_id"]
    except (KeyError, TypeError, IndexError):
        return None
    return value if isinstance(value, str) else None


def _retarget(template: Decision, subscriber_id: str) -> Decision:
    return from_fields({**vars(template), "subscriber": subscriber_id})


def _words(items: Sequence[str], conjunction: str = "and") -> str:
    if not items:
        return "nothing"
    if len(items) == 1:
        return items[0]
    return ", ".join(items[:-1]) + f" {conjunction} " + items[-1]


_REASON_WORDS = _words(sorted(_REASONS), "or")
