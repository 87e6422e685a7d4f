"""The policy engine: load a policy file once, then decide, subscriber by subscriber.

How a decision is reached (the same steps :func:`broker.policy.explain.explain`
puts into words):

1. The subscriber must be registered (else ``UNKNOWN_SUBSCRIBER``) and the
   event's source agency must be registered (else ``UNKNOWN_AGENCY``). An
   event that lacks the routing facts is withheld (``MALFORMED_EVENT``): a
   decision is a value, never an exception, and we fail closed.
2. The rules are tried in file order; the first rule whose conditions all hold
   decides (source agency/type, category, payload type, subscriber/role, the
   rule's purpose among the subscriber's registered purposes, minimum risk,
   break-glass, area). A subscriber that does not serve the child's local
   authority is matched only by a rule with ``cross_area: true``. No rule:
   withheld by default deny (``OUT_OF_AREA`` or ``NO_MATCHING_RULE``).
3. A ``withhold`` rule withholds, with its written reason.
4. A ``share`` rule shares on one of two footings, never on neither:

   - **consent** given for the rule's purpose, in scope for the recipient's
     role and not expired or withdrawn (UK GDPR Art 6(1)(a)/9(2)(a));
   - **without consent, to protect the child**, only if the rule permits it
     (``without_consent``) *and* the event's risk is at or above the rule's
     threshold *and* the source agency gave one of the three reasons of
     DPA 2018 Sch 1 para 18(3) (``sharing.no_consent_reason``) *and* a non-blank
     written justification (``sharing.justification``). docs/DESIGN.md: "no consent
     needed when asking would put the child at risk or when it cannot be given
     or reasonably obtained".

     When consent was **refused or withdrawn**, the only reason accepted is
     ``WOULD_PREJUDICE_PROTECTION``: the record shows that consent *could* be
     given and *was* obtained, which contradicts "cannot be given" and "cannot
     reasonably be obtained"; what remains lawful is to override the refusal
     because respecting it would prejudice the child's protection
     (Sch 1 para 18(3)(c); for police, Sch 8 para 4 under the same test).
     Such a decision records the refusal it overrode (``decision.consent``).

   The lawful basis follows the footing and the recipient: consent; else for a
   law-enforcement recipient (police, DPA 2018 Part 3) Sch 8 para 4; else UK
   GDPR Art 9(2)(g) with DPA 2018 Sch 1 para 18.
5. Need to know, field by field: the recipient gets the data classes its roles
   are granted (only the roles the rule matched on), narrowed by the rule's
   ``data_classes``, plus ``referrer``/``third_party`` only if the rule names
   them in ``explicit_grants``, and on consent only what the consent's scope
   covers. ``metadata`` is always kept. Everything else is redacted.
6. Break-glass (``sharing.break_glass``) never creates a lawful basis; it only
   lets a rule written for emergencies (``break_glass: true``) match, e.g. to
   reach an out-of-area team. Every share of a break-glass event carries the
   obligation ``REVIEW_WITHIN_72H`` due at decision time + 72 hours.

Two paths reach the same decisions. :meth:`Policy.decide` (and, for every
subscriber, :meth:`Policy.decide_all_plainly`) is the plain reading of the steps
above, one subscriber at a time. :meth:`Policy.decide_all`, the router's path,
compiles them: which rule matches each subscriber, and every part of a decision
that does not depend on the event itself (reason texts, need-to-know classes,
obligations, the decision's fixed fields), follow from an event's *routing
facts* alone (source agency, category, payload type, risk, break-glass, the
child's local authority), which take few values; they are worked out once per
set of facts (a *plan*) and reused. Per event what is left is reading the
facts, the consent lookup, and filling in the event's id, time and fields:

- the facts are read by :meth:`Policy._quick_facts`, for an event shaped as the
  codec decodes it (exact types); any other event takes the plain path whole;
- the fields present come from code generated from the field paths when the
  policy loads (:func:`broker.policy._present.compile_present`), not a walk of
  the event;
- what a share rule decides past the consent lookup (an *outcome*: reason code,
  texts, basis, data classes) is remembered per consent status and scope and
  the event's no-consent reason and justification (:meth:`Policy._outcome`);
  the split of the fields present is remembered per shape of event.

``tests/test_policy_exhaustive.py`` checks that both paths agree on every input
combination of the example policy; ``tests/test_policy_decide.py`` holds each
piece of the router's path to the plain one on generated inputs.

Modules: this one is the facade (:class:`Policy`: loading, the registry,
:meth:`Policy.decide`); :mod:`broker.policy._steps` the plain steps;
:mod:`broker.policy._plans` the compiled plans; :mod:`broker.policy._present`
the fields present, walked and generated.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path as FsPath
from typing import TYPE_CHECKING, Any, cast

from broker._jcs import CanonicalizationError, canonicalize
from broker._memo import BoundedMemo
from broker.policy._check import Checked, Vocabulary, check

if TYPE_CHECKING:
    from broker.identity.linkage import Thresholds
    from broker.loop.rules import ClockPolicy
    from broker.patterns.detectors import Threshold
from broker.policy._plans import CompiledPlans, _Outcome, _Step
from broker.policy._present import bits_tree, build_tree, compile_present
from broker.policy._steps import _event_id, _retarget, _Target
from broker.policy._yaml import load_document
from broker.policy.consent import ConsentLookup, ConsentRecord, ConsentVerdict, judge_consent
from broker.policy.decision import Decision
from broker.policy.exceptions import PolicyError, Problem
from broker.policy.model import Agency, ConsentRecorder, Role, Rule, Subscriber
from broker.policy.vocabulary import ReasonCode

# Bounds of the engine's memories (oldest entry forgotten first). Events whose
# routing facts or shapes take unusual values cost a plan each, never unbounded
# memory; a plan is about 10 kB with ten subscribers.
_PLAN_CACHE_LIMIT = 4096
_SHAPE_CACHE_LIMIT = 16_384
_OUTCOME_CACHE_LIMIT = 8192  # ~1.5 kB each


def canonical_form(data: Any) -> bytes:
    """The canonical form of a parsed policy: its RFC 8785 (JCS) bytes (:mod:`broker._jcs`).

    Comments, key order, quoting style, indentation and YAML flow/block style
    do not change it; any change of meaning does. Raises
    :class:`~broker._jcs.CanonicalizationError` for a value JSON cannot carry
    exactly (an integer outside the IEEE-754 safe range).
    """
    return canonicalize(data)


def policy_digest(data: Any) -> str:
    """SHA-256 (hex) of :func:`canonical_form`: the policy version every decision cites."""
    return hashlib.sha256(canonical_form(data)).hexdigest()


def _default_vocabulary() -> Vocabulary:
    """The field data classes from the codec's schemas (the one source of field paths)."""
    try:
        from broker.codec import Codec  # type: ignore[attr-defined,unused-ignore]

        field_classes = dict(Codec.default().data_classes())
    except Exception as exc:  # any failure to learn the schema means: do not start
        raise PolicyError(
            "<codec>", [Problem(1, 1, f"cannot read field data classes from the codec: {exc}")]
        ) from exc
    return Vocabulary(field_classes)


class Policy(CompiledPlans):
    """A loaded, checked policy. Immutable; safe to share between threads.

    The facade: construction and the registry here, the plain steps in
    :class:`~broker.policy._steps.DecisionSteps`, the router's compiled plans in
    :class:`~broker.policy._plans.CompiledPlans`.
    """

    def __init__(
        self, checked: Checked, *, digest: str, vocabulary: Vocabulary, source: str
    ) -> None:
        """Use :meth:`load` or :meth:`from_text`."""
        self._c = checked
        self._digest = digest
        self.source = source
        self._leaves = dict(vocabulary.field_classes)
        # A leaf's bit is its rank among the paths in sorted order, so a bit set
        # lists its paths sorted (lowest bit first).
        self._paths_in_order = tuple(sorted(self._leaves))
        bit_of = {path: 1 << i for i, path in enumerate(self._paths_in_order)}
        self._root = bits_tree(build_tree(self._leaves), bit_of)
        self._present_compiled = compile_present(self._root)
        self._targets: dict[str, tuple[_Target, ...]] = {
            sid: tuple(self._compile(r, s) for r in checked.rules if sid in r.subscribers)
            for sid, s in checked.subscribers.items()
        }
        # Memories of derived values (see the module docstring).
        self._plans: BoundedMemo[tuple[Any, ...], tuple[_Step, ...]] = BoundedMemo(
            _PLAN_CACHE_LIMIT
        )
        self._path_sets: BoundedMemo[int, tuple[str, ...]] = BoundedMemo(_SHAPE_CACHE_LIMIT)
        self._splits: BoundedMemo[tuple[int, frozenset[str]], tuple[tuple[str, ...], ...]] = (
            BoundedMemo(_SHAPE_CACHE_LIMIT)
        )
        self._outcomes: BoundedMemo[tuple[Any, ...], _Outcome] = BoundedMemo(_OUTCOME_CACHE_LIMIT)

    # -- construction ------------------------------------------------------------
    @classmethod
    def load(
        cls,
        path: str | FsPath,
        *,
        field_classes: Mapping[str, str] | None = None,
    ) -> Policy:
        """Load and check a policy file; raise :class:`PolicyError` on any problem.

        ``field_classes`` is the codec's ``{path: data class}`` map (default:
        ``Codec.default().data_classes()``).
        """
        source = str(path)
        try:
            text = FsPath(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise PolicyError(source, [Problem(1, 1, f"cannot read policy file: {exc}")]) from exc
        return cls.from_text(text, source=source, field_classes=field_classes)

    @classmethod
    def from_text(
        cls,
        text: str,
        *,
        source: str = "<policy>",
        field_classes: Mapping[str, str] | None = None,
    ) -> Policy:
        """Like :meth:`load`, from the text of a policy file."""
        policy, problems = cls.check_text(text, source=source, field_classes=field_classes)
        if policy is None:
            raise PolicyError(source, problems)
        return policy

    @classmethod
    def check_text(
        cls,
        text: str,
        *,
        source: str = "<policy>",
        field_classes: Mapping[str, str] | None = None,
    ) -> tuple[Policy | None, list[Problem]]:
        """Check without raising: the policy (None if any problem) and every problem found."""
        vocab = _default_vocabulary() if field_classes is None else Vocabulary(dict(field_classes))
        doc, problems = load_document(text)
        if doc is None:
            return None, problems
        checked, more = check(doc, vocab)
        problems = sorted(problems + more)
        if checked is None or problems:
            return None, problems
        try:
            digest = policy_digest(doc.data)
        except CanonicalizationError as exc:
            return None, [Problem(1, 1, f"the policy has no canonical form: {exc}")]
        return cls(checked, digest=digest, vocabulary=vocab, source=source), []

    # -- registry -------------------------------------------------------------
    @property
    def digest(self) -> str:
        """SHA-256 of the canonical form of the policy file (see :func:`canonical_form`)."""
        return self._digest

    @property
    def event_signatures(self) -> str:
        """``required``: every event must carry a valid signature of its agency;
        ``optional``: an agency with registered keys must sign, others may not."""
        return self._c.event_signatures

    @property
    def name(self) -> str:
        return self._c.name

    @property
    def clocks(self) -> ClockPolicy:
        """The partnership's statutory clocks (``clocks`` section, else the defaults)."""
        return cast("ClockPolicy", self._c.clocks)

    @property
    def linkage_thresholds(self) -> Thresholds:
        """Record-linkage thresholds (``identity`` section, else the defaults)."""
        return cast("Thresholds", self._c.identity)

    @property
    def identity_deciders(self) -> tuple[str, ...]:
        """Subscribers whose people may link and unlink children (``identity.deciders``)."""
        return self._c.identity_deciders

    def identity_entitlement(self, subscriber: str) -> str | None:
        """Why ``subscriber`` may not link or unlink, or None if it may."""
        if subscriber in self._c.identity_deciders:
            return None
        return (f"subscriber {subscriber!r} is not among the policy's identity.deciders:"
                " it may not link or unlink children")

    @property
    def pattern_thresholds(self) -> dict[str, Threshold]:
        """Each detector's threshold and window (``patterns`` section, else the defaults)."""
        return cast("dict[str, Threshold]", self._c.patterns)

    @property
    def subscribers(self) -> tuple[Subscriber, ...]:
        """Every registered subscriber, in file order (the order of ``decide_all``)."""
        return tuple(self._c.subscribers.values())

    @property
    def agencies(self) -> tuple[Agency, ...]:
        return tuple(self._c.agencies.values())

    @property
    def rules(self) -> tuple[Rule, ...]:
        return tuple(self._c.rules)

    @property
    def roles(self) -> Mapping[str, Role]:
        return dict(self._c.roles)

    @property
    def purposes(self) -> Mapping[str, str]:
        return dict(self._c.purposes)

    @property
    def local_authorities(self) -> Mapping[str, str]:
        return dict(self._c.local_authorities)

    @property
    def field_classes(self) -> Mapping[str, str]:
        return dict(self._leaves)

    def agency(self, agency_id: str) -> Agency | None:
        """The registered agency, or None: the router must not accept its events."""
        return self._c.agencies.get(agency_id)

    def subscriber(self, subscriber_id: str) -> Subscriber | None:
        return self._c.subscribers.get(subscriber_id)

    @property
    def consent_recorders(self) -> tuple[ConsentRecorder, ...]:
        """Who may record consent, for which purposes (the ``consent`` section)."""
        return self._c.consent_recorders

    def consent_entitlement(
        self,
        *,
        agency: str,
        local_authority: str,
        purpose: str,
        status: str,
        previous: ConsentRecord | None,
        now_ms: int,
    ) -> ConsentVerdict:
        """Whether ``agency`` may record this consent record (:func:`judge_consent`)."""
        return judge_consent(
            self._c.consent_recorders, self._c.agencies.get(agency),
            local_authority=local_authority, purpose=purpose, status=status,
            previous=previous, now_ms=now_ms,
        )  # fmt: skip

    def rule(self, rule_id: str) -> Rule | None:
        for r in self._c.rules:
            if r.id == rule_id:
                return r
        return None

    # -- decisions ------------------------------------------------------------
    def decide(
        self,
        event: Mapping[str, Any],
        subscriber_id: str,
        consents: ConsentLookup | None,
        now_ms: int,
    ) -> Decision:
        """The decision for one subscriber, the plain way (see the module docstring).

        Never raises for any event or subscriber.
        """
        sub = self._c.subscribers.get(subscriber_id)
        if sub is None:
            return self._withhold(
                subscriber_id,
                ReasonCode.UNKNOWN_SUBSCRIBER,
                f"{subscriber_id!r} is not a registered subscriber of this policy;"
                " nothing is shared with an unknown recipient.",
                now_ms=now_ms,
                event_id=_event_id(event),
            )
        facts = self._facts(event, now_ms)
        if isinstance(facts, Decision):
            return _retarget(facts, subscriber_id)
        return self._decide(facts, sub, consents, now_ms)
