"""The compiled plans: every subscriber's decision for an event, the router's path.

Which rule matches each subscriber, and every part of a decision that does not
depend on the event itself, follow from the event's routing facts alone; they
are worked out once per set of facts (a *plan*) and remembered, and per event
only the consent lookup and the event's id, time and fields are filled in (the
engine's docstring tells the whole of it). :class:`CompiledPlans` reaches the
same decisions as :class:`broker.policy._steps.DecisionSteps`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from broker._memo import BoundedMemo
from broker.policy._steps import (
    _ALWAYS,
    _REASON_WORDS,
    _REASONS,
    _REFUSALS,
    _STATUS_CODE,
    _STATUS_WORDS,
    DecisionSteps,
    _Facts,
    _Target,
    _words,
)
from broker.policy.consent import NO_CONSENT, ConsentLookup, ConsentState, ConsentStatus
from broker.policy.decision import Decision, Obligation, decision_fields
from broker.policy.model import Rule, Subscriber
from broker.policy.vocabulary import (
    RISK_LEVELS,
    RISK_RANK,
    LawfulBasis,
    NoConsentReason,
    ObligationCode,
    Outcome,
    ReasonCode,
)


@dataclass(frozen=True, slots=True, eq=False)  # compared and hashed by identity (a memo key)
class _Share:
    """A share rule's step of a plan: what is fixed once the rule, the subscriber and
    the event's routing facts are. The texts are the suffixes of the reasons
    :meth:`Policy._apply` writes, after the consent position's words."""

    purpose: str
    roles: tuple[str, ...]
    lookups: tuple[tuple[tuple[str, str], str], ...]  # ((purpose, role), role) per role
    alone: bool  # no other step of its plan looks up the same purpose and role
    classes: frozenset[str]
    basis_without_consent: LawfulBasis
    obligations: tuple[ObligationCode, ...]
    given: str  # the start of the CONSENT_GIVEN reason, up to the record id
    words: Mapping[ConsentStatus, str]  # the consent position, before its record id
    no_override: str | None  # the rule does not permit sharing without consent
    risk_too_low: str | None  # the event's risk is below the override threshold
    shared_without: Mapping[NoConsentReason, str]
    withhold: dict[str, Any]  # the fields of its withhold decisions, event's left blank
    share: dict[str, Any]  # the fields of its share decisions, event's left blank


# What a share step decides for one consent position and one event's sharing facts
# (Policy._outcome): the decision's fields but the event's, the two parts of its
# reason around the consent record id, whether that is consent given (the record
# is cited), the obligations to date from the decision time, and the data classes
# shared (None: withheld).
_Outcome = tuple[dict[str, Any], str, str, bool, tuple[ObligationCode, ...], frozenset[str] | None]
_new_object = object.__new__
_new_facts = tuple.__new__
_set_attribute = object.__setattr__

# A plan step: the fields of a decision that needs nothing of the event but its
# id, time and fields present (default deny, a withhold rule), or a share rule.
_Step = dict[str, Any] | _Share


class CompiledPlans(DecisionSteps):
    """The compiled path of :class:`broker.policy.engine.Policy` (a base class of it)."""

    _present_compiled: Callable[[Any], int]
    _plans: BoundedMemo[tuple[Any, ...], tuple[_Step, ...]]
    _splits: BoundedMemo[tuple[int, frozenset[str]], tuple[tuple[str, ...], ...]]
    _outcomes: BoundedMemo[tuple[Any, ...], _Outcome]

    def decide_all(
        self, event: Mapping[str, Any], consents: ConsentLookup | None, now_ms: int
    ) -> list[Decision]:
        """One decision per registered subscriber, in registry order (the router's path).

        The same decisions as :meth:`decide` for each subscriber, from the plan
        of the event's routing facts (see the module docstring).
        """
        f = self._quick_facts(event)
        if f is None:
            return self.decide_all_plainly(event, consents, now_ms)
        key = f.routing
        plan = self._plans.get(key)
        if plan is None:
            plan = self._plan(f)
            self._plans.remember(key, plan)
        paths = self._path_sets.get(f.present)
        if paths is None:
            paths = self._paths(f.present)
        event_id = f.event_id
        subject = f.subject
        lookup = consents.lookup if consents is not None and subject is not None else None
        present = f.present
        outcomes = self._outcomes
        found: dict[tuple[str, str], ConsentState] = {}  # consent lookups, per purpose and role
        out: list[Decision] = []
        for step in plan:
            if isinstance(step, dict):
                fields = step.copy()
                fields["event_id"] = event_id
                fields["now_ms"] = now_ms
                fields["fields_redacted"] = paths
                decision = _new_object(Decision)
                _set_attribute(decision, "__dict__", fields)
                out.append(decision)
                continue
            # A share step: the consent position (as in _apply), then its outcome
            # (_outcome_of), completed with the event's id, time, fields, consent
            # and record id, and obligations' due times. (Written inline here, not
            # as a method, for speed: docs/PERFORMANCE.md.)
            state = NO_CONSENT
            if lookup is not None and subject is not None:
                purpose = step.purpose
                for pair, role in step.lookups:
                    if step.alone:
                        got = lookup(subject, purpose, role, now_ms)
                    else:
                        seen = found.get(pair)
                        if seen is None:
                            seen = found[pair] = lookup(subject, purpose, role, now_ms)
                        got = seen
                    if got.status is ConsentStatus.GIVEN:
                        state = got
                        break
                    if got.status is not ConsentStatus.NONE and state.status is ConsentStatus.NONE:
                        state = got
            if state is NO_CONSENT:
                outcome = outcomes.get((step, ConsentStatus.NONE, None, f.reason_raw, f.justified))
                record_id = None
                if outcome is None:
                    outcome = self._outcome_of(step, state, f)
            else:
                record_id = state.record_id
                outcome = self._outcome_of(step, state, f)
            template, head, tail, given, obligations, classes = outcome
            fields = template.copy()
            if classes is None:  # withheld
                fields["fields_redacted"] = paths
            else:
                split = self._splits.get((present, classes))
                if split is None:
                    split = self._split(present, classes)
                fields["fields_shared"], fields["fields_redacted"] = split
            if given:
                fields["reason"] = f"{head}{record_id}{tail}"
                fields["consent_ref"] = record_id
            elif record_id:
                fields["reason"] = f"{head} (record {record_id}){tail}"
            # else: the template's reason, head + tail
            fields["now_ms"] = now_ms
            fields["event_id"] = event_id
            fields["consent"] = state
            if obligations:
                fields["obligations"] = tuple(
                    Obligation(c, now_ms + c.due_after_ms) for c in obligations
                )
            decision = _new_object(Decision)
            _set_attribute(decision, "__dict__", fields)
            out.append(decision)
        return out

    def _outcome_of(self, s: _Share, state: ConsentState, f: _Facts) -> _Outcome:
        """The outcome of share step ``s`` for the consent ``state``, remembered.

        Past the consent lookup, a decision depends on the event only through
        its id, time, fields present, no-consent reason and justification, and
        on the consent found only through its status, scope and record id. What
        follows from the step, the status, the scope and the sharing facts (an
        *outcome*, :meth:`_outcome`) is worked out once; :meth:`decide_all`
        completes it per event. (The fields present are not part of an
        outcome's key: events come in more shapes than consent positions, and a
        bounded memory holds fewer of their products.)
        """
        status = state.status
        scope = state.data_classes if status is ConsentStatus.GIVEN else None
        if type(status) is not ConsentStatus or (
            scope is not None and type(scope) is not frozenset
        ):
            # a lookup of another kind than ConsentStore's: worked out, not remembered
            return self._outcome(s, status, scope, f)
        memo_key = (s, status, scope, f.reason_raw, f.justified)
        outcome = self._outcomes.get(memo_key)
        if outcome is None:
            outcome = self._outcome(s, status, scope, f)
            self._outcomes.remember(memo_key, outcome)
        return outcome

    def _quick_facts(self, event: Any) -> _Facts | None:
        """:meth:`_facts` of an event as the codec decodes it, or None: take the plain path.

        Exact types only (a ``dict`` with every key :meth:`_facts` reads, ``str``
        values, a union ``(str, body)`` payload or None, a registered agency, a
        known risk): then each step below is :meth:`_facts`'s on the same values
        (``str(x)`` of an exact ``str`` is ``x``, ``.get`` of a present key is the
        subscript). Anything else, including every event :meth:`_facts` would
        withhold, returns None and the caller takes the plain path.
        """
        if type(event) is not dict:
            return None
        try:
            event_id = event["event_id"]
            source = event["source"]
            subject = event["subject"]
            sharing = event["sharing"]
            payload = event["payload"]
            risk = event["risk_level"]
            category = event["category"]
            if type(source) is not dict or type(subject) is not dict or type(sharing) is not dict:
                return None
            agency_id = source["agency_id"]
            local_authority = subject["local_authority"]
            pseudonym = subject["pseudonym"]
            reason_raw = sharing["no_consent_reason"]
            justification = sharing["justification"]
            break_glass = sharing["break_glass"] is True
        except KeyError:
            return None
        if (
            type(event_id) is not str
            or type(agency_id) is not str
            or type(category) is not str
            or type(risk) is not str
            or agency_id not in self._c.agencies
        ):
            return None
        risk_rank = RISK_RANK.get(risk)
        if risk_rank is None:
            return None
        if type(payload) is tuple and len(payload) == 2 and type(payload[0]) is str:
            payload_type: str | None = payload[0].rsplit(".", 1)[-1]
        elif payload is None:
            payload_type = None
        else:
            return None
        if local_authority is not None and type(local_authority) is not str:
            return None
        if type(pseudonym) is str:
            pseudonym = pseudonym or None
        elif pseudonym is not None:
            return None
        if type(justification) is str:
            justified = bool(justification.strip())
        elif justification is None:
            justified = False
        else:
            return None
        if reason_raw is None:
            reason = None
        elif type(reason_raw) is str:
            reason = _REASONS.get(reason_raw)
        else:
            return None
        return _new_facts(  # _Facts(...), less a Python-level __new__
            _Facts,
            (
                (agency_id, category, payload_type, risk, break_glass, local_authority),
                event_id,
                agency_id,
                category,
                payload_type,
                risk,
                risk_rank,
                pseudonym,
                local_authority,
                reason,
                reason_raw,
                justified,
                break_glass,
                self._present_compiled(event),
            ),
        )

    def _split(self, present: int, classes: frozenset[str]) -> tuple[tuple[str, ...], ...]:
        """The present fields' paths in ``classes`` (shared) and not (redacted), each sorted."""
        got = self._splits.get((present, classes))
        if got is None:
            bits = 0
            for i, path in enumerate(self._paths_in_order):
                if self._leaves[path] in classes:
                    bits |= 1 << i
            got = self._paths(present & bits), self._paths(present & ~bits)
            self._splits.remember((present, classes), got)
        return got

    def _plan(self, f: _Facts) -> tuple[_Step, ...]:
        """Every subscriber's step for events with ``f``'s routing facts, in registry order."""
        steps: list[_Step] = []
        for sub in self._c.subscribers.values():
            in_area = f.local_authority is not None and f.local_authority in sub.local_authorities
            t = self._match(f, sub, in_area)
            if t is None:
                code, text = self._default_deny(f, sub, in_area)
                steps.append(self._template(sub.id, code, text, None, f.break_glass))
            elif not t.rule.shares:
                code, text = ReasonCode.RULE_WITHHOLD, t.rule.reason
                steps.append(self._template(sub.id, code, text, t.rule, f.break_glass))
            else:
                steps.append(self._share_step(t, f, sub))
        # A consent lookup is remembered for the event only where two steps would repeat it.
        looked_up = Counter(key for s in steps if isinstance(s, _Share) for key, _ in s.lookups)
        return tuple(
            replace(s, alone=all(looked_up[key] == 1 for key, _ in s.lookups))
            if isinstance(s, _Share)
            else s
            for s in steps
        )

    def _template(
        self, sub_id: str, code: ReasonCode, text: str, rule: Rule | None, break_glass: bool
    ) -> dict[str, Any]:
        """The fields of a withhold decision, with the event's (id, time, fields) left blank."""
        return vars(
            self._withhold(
                sub_id, code, text, now_ms=0, event_id=None, rule=rule, break_glass=break_glass
            )
        )

    def _share_step(self, t: _Target, f: _Facts, sub: Subscriber) -> _Share:
        rule = t.rule
        purpose = rule.purpose
        assert purpose is not None  # the checker guarantees a purpose on share rules
        codes = set(rule.obligations)
        if f.break_glass:
            codes.add(ObligationCode.REVIEW_WITHIN_72H)
        no_override = risk_too_low = None
        shared_without: dict[NoConsentReason, str] = {}
        if t.override_rank is None:
            no_override = f", and rule {rule.id!r} does not permit sharing without consent."
        else:
            threshold = RISK_LEVELS[t.override_rank]
            if f.risk_rank < t.override_rank:
                risk_too_low = (
                    f"; sharing without consent needs risk {threshold} or above under rule"
                    f" {rule.id!r}, and this event is {f.risk}."
                )
            shared_without = {
                r: f"; shared without consent to protect the child: risk {f.risk} is at or"
                f" above {threshold}, the source agency gave the reason {r} ({r.text}) and a"
                " written justification."
                for r in NoConsentReason
            }
        return _Share(
            purpose=purpose,
            roles=t.roles,
            lookups=tuple(((purpose, role), role) for role in t.roles),
            alone=False,
            classes=t.classes,
            basis_without_consent=(
                LawfulBasis.LAW_ENFORCEMENT_SAFEGUARDING
                if sub.law_enforcement
                else LawfulBasis.SAFEGUARDING
            ),
            obligations=tuple(sorted(codes)),
            given=f"consent for purpose {purpose!r} is given (record ",
            words={s: f"{w} for purpose {purpose!r}" for s, w in _STATUS_WORDS.items()},
            no_override=no_override,
            risk_too_low=risk_too_low,
            shared_without=shared_without,
            withhold=self._template(sub.id, ReasonCode.RULE_WITHHOLD, "", rule, f.break_glass),
            share=decision_fields(
                subscriber=sub.id,
                outcome=Outcome.SHARE,
                rule_id=rule.id,
                reason_code=ReasonCode.CONSENT_GIVEN,
                reason="",
                policy_digest=self._digest,
                now_ms=0,
                break_glass=f.break_glass,
                purpose=purpose,
            ),
        )

    def _outcome(
        self, s: _Share, status: ConsentStatus, scope: frozenset[str] | None, f: _Facts
    ) -> _Outcome:
        """A share step's decision for a consent position and the event's sharing facts.

        Returns the decision's fields but its event id, time, consent, reason,
        obligations and fields; its reason in two parts around the consent
        record id, ``head`` and ``tail`` (see :meth:`decide_all`); and the data
        classes shared (None: withheld). The same steps as :meth:`_apply`, with
        what the plan fixed already worked out.
        """
        if status is ConsentStatus.GIVEN:
            if scope:
                classes = s.classes & (scope | _ALWAYS)
                tail = f") and covers {_words(sorted(scope))}."
            else:
                classes = s.classes
                tail = ")."
            head = s.given
            code = ReasonCode.CONSENT_GIVEN
            basis = LawfulBasis.CONSENT
            no_consent_reason = None
        else:
            head = s.words[status]
            reason = f.reason
            refusal: tuple[ReasonCode, str] | None = None
            if s.no_override is not None:
                refusal = _STATUS_CODE[status], s.no_override
            elif s.risk_too_low is not None:
                refusal = ReasonCode.OVERRIDE_RISK_TOO_LOW, s.risk_too_low
            elif reason is None:
                gave = f" (it gave {f.reason_raw!r}, which is not one)" if f.reason_raw else ""
                refusal = (
                    ReasonCode.OVERRIDE_NO_REASON,
                    f"; sharing without consent needs one of the reasons {_REASON_WORDS} from"
                    f" the source agency{gave}.",
                )
            elif not f.justified:
                refusal = (
                    ReasonCode.OVERRIDE_NO_JUSTIFICATION,
                    "; sharing without consent needs a written justification from the"
                    " source agency, and the event carries none.",
                )
            elif status in _REFUSALS and reason is not NoConsentReason.WOULD_PREJUDICE_PROTECTION:
                refusal = (
                    ReasonCode.OVERRIDE_REASON_CONTRADICTED,
                    f"; the reason {reason} is contradicted by that record (consent"
                    " could be and was sought), so only WOULD_PREJUDICE_PROTECTION can override"
                    " the decision of the child or family.",
                )
            if refusal is not None:
                fields = s.withhold.copy()
                fields["reason_code"], tail = refusal
                fields["reason"] = head + tail  # without a record id
                return fields, head, tail, False, (), None
            assert reason is not None
            classes = s.classes
            tail = s.shared_without[reason]
            code = ReasonCode.SHARED_WITHOUT_CONSENT
            basis = s.basis_without_consent
            no_consent_reason = str(reason)

        fields = s.share.copy()
        fields["reason_code"] = code
        fields["reason"] = head + tail  # without a record id (not consent given)
        fields["lawful_basis"] = basis
        fields["data_classes_shared"] = classes
        fields["no_consent_reason"] = no_consent_reason
        return fields, head, tail, status is ConsentStatus.GIVEN, s.obligations, classes
