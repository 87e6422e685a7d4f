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
     written justification (``sharing.justification``). DESIGN.md: "no consent
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
  policy loads (:func:`_compile_present`), not a walk of the event;
- what a share rule decides past the consent lookup (an *outcome*: reason code,
  texts, basis, data classes) is remembered per consent status and scope and
  the event's no-consent reason and justification (:meth:`Policy._outcome`);
  the split of the fields present is remembered per shape of event.

``tests/test_policy_exhaustive.py`` checks that both paths agree on every input
combination of the example policy; ``tests/test_policy_decide.py`` holds each
piece of the router's path to the plain one on generated inputs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path as FsPath
from typing import Any, NamedTuple

from broker._memo import BoundedMemo
from broker.policy._check import Checked, Vocabulary, check
from broker.policy._yaml import load_document
from broker.policy.consent import NO_CONSENT, ConsentLookup, ConsentState, ConsentStatus
from broker.policy.decision import (
    DEFAULT_DENY,
    Decision,
    Obligation,
    decision_fields,
    from_fields,
)
from broker.policy.exceptions import PolicyError, Problem
from broker.policy.model import Agency, Role, Rule, Subscriber
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

# Bounds of the engine's memories (oldest entry forgotten first). Events whose
# routing facts or shapes take unusual values cost a plan each, never unbounded
# memory; a plan is about 10 kB with ten subscribers.
_PLAN_CACHE_LIMIT = 4096
_SHAPE_CACHE_LIMIT = 16_384
_OUTCOME_CACHE_LIMIT = 8192  # ~1.5 kB each


def canonical_form(data: Any) -> bytes:
    """The canonical form of a parsed policy: UTF-8 JSON, keys sorted, no whitespace.

    Comments, key order, quoting style, indentation and YAML flow/block style
    do not change it; any change of meaning does.
    """
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


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


# The field paths as a tree: key -> (path, label if a leaf, subtree if not).
_Tree = dict[str, tuple[str, str | None, "_Tree | None"]]
# The same tree for the walk over an event, split at each node into its leaves
# (key -> the bit of the leaf's path) and its inner nodes (key -> node).
_Node = tuple[dict[str, int], dict[str, "_Node"]]


def _build_tree(leaves: Mapping[str, str]) -> _Tree:
    root: _Tree = {}
    for path, label in leaves.items():
        node = root
        parts = path.split(".")
        for i, part in enumerate(parts):
            here = ".".join(parts[: i + 1])
            if i == len(parts) - 1:
                node[part] = (here, label, None)
                break
            entry = node.get(part)
            if entry is None or entry[2] is None:
                entry = (here, None, {})
                node[part] = entry
            child = entry[2]
            assert child is not None
            node = child
    return root


def _bits_tree(tree: _Tree, bit_of: Mapping[str, int]) -> _Node:
    leaves: dict[str, int] = {}
    inner: dict[str, _Node] = {}
    for key, (path, label, child) in tree.items():
        if label is not None:
            leaves[key] = bit_of[path]
        elif child is not None:
            inner[key] = _bits_tree(child, bit_of)
    return leaves, inner


def _present(value: Any, node: _Node) -> int:
    """The bit set of the leaf fields under ``node`` that hold a value (not None).

    A union value ``(record name, body)`` descends into the branch named by the
    record's short name (a path segment); arrays add no segment (CONTRACTS.md,
    "Field paths").
    """
    leaves, inner = node
    present = 0
    kind = type(value)
    # (exact dicts, tuples and lists, what the codec decodes to, skip the slower ABC check)
    if kind is dict or (kind is not tuple and kind is not list and isinstance(value, Mapping)):
        for key, v in value.items():
            if v is not None:
                bit = leaves.get(key)
                if bit is not None:
                    present |= bit
                else:
                    child = inner.get(key)
                    if child is not None:
                        present |= _present(v, child)
    elif isinstance(value, tuple):
        if len(value) == 2 and isinstance(value[0], str) and value[1] is not None:
            child = inner.get(value[0].rsplit(".", 1)[-1])
            if child is not None:
                present |= _present(value[1], child)
    elif isinstance(value, list):
        for v in value:
            if v is not None:
                present |= _present(v, node)
    return present


def _lowest_bit(node: _Node) -> int:
    """The index of the lowest bit under ``node`` (0 if none): its subtree's paths
    share a prefix, so in sorted order they are adjacent and their bits a run."""
    leaves, inner = node
    found = [bit.bit_length() - 1 for bit in leaves.values()]
    found += [_lowest_bit(child) for child in inner.values() if child[0] or child[1]]
    return min(found, default=0)


def _compile_present(root: _Node) -> Callable[[Any], int]:
    """:func:`_present` for ``root``, as generated straight-line Python (the router's path).

    The field paths are known when the policy loads, so instead of walking an
    event key by key and asking at each step whether the key is a leaf, an
    inner node or neither, the generated code asks an exact ``dict`` for each of
    its known keys in turn (as the codec's generated reader and writer do for a
    schema), records inside records written inline. A value of any other kind
    than an exact ``dict``, ``list`` or union ``(str, body)`` tuple (a Mapping
    subclass, a tuple subclass, a str subclass as a union name, a key missing)
    goes to :func:`_present` itself, so the answer is :func:`_present`'s for
    every input, never a guess; ``tests/test_policy_decide.py`` holds the two
    equal on generated values.

    Each node's code gathers its bits shifted down to its lowest one (a node's
    paths are a run of bits): small ints, one shift per node instead of an
    operation on a ~90-bit int per field. ~2x faster than the walk on the
    router's events (see the commit).
    """
    lines: list[str] = []
    namespace: dict[str, Any] = {"_present": _present}
    names: dict[int, str] = {}
    counter = itertools.count()

    def fresh(prefix: str) -> str:
        return f"{prefix}{next(counter)}"

    def function_of(node: _Node) -> str:
        """The name of ``node``'s function: ``_present(value, node) >> lowest bit``."""
        got = names.get(id(node))
        if got is None:
            got = names[id(node)] = fresh("_n")
            emit_function(node, got)
        return got

    def emit_dict(value: str, node: _Node, acc: str, indent: int, out: list[str]) -> None:
        """Lines that set ``acc`` to the bits of the exact dict ``value`` at ``node``."""
        pad = "    " * indent
        lo = _lowest_bit(node)
        leaves, inner = node
        out.append(f"{pad}{acc} = 0")
        out.append(f"{pad}try:")
        for key, bit in leaves.items():
            out.append(f"{pad}    if {value}[{key!r}] is not None:")
            out.append(f"{pad}        {acc} |= {bit >> lo!r}")
        for key, child in inner.items():
            shift = _lowest_bit(child) - lo
            var, sub = fresh("v"), fresh("b")
            out.append(f"{pad}    {var} = {value}[{key!r}]")
            out.append(f"{pad}    if {var} is not None:")
            out.append(f"{pad}        if type({var}) is dict:")
            emit_dict(var, child, sub, indent + 3, out)
            out.append(f"{pad}        else:")
            out.append(f"{pad}            {sub} = {function_of(child)}({var})")
            out.append(f"{pad}        {acc} |= {sub} << {shift}")
        out.append(f"{pad}except KeyError:  # a key missing: the plain walk")
        out.append(f"{pad}    {acc} = _present({value}, {node_constant(node)}) >> {lo}")

    def node_constant(node: _Node) -> str:
        """A name the generated code can pass to :func:`_present` for ``node``."""
        name = f"_node{id(node)}"
        namespace[name] = node
        return name

    def emit_function(node: _Node, fn: str) -> None:
        lo = _lowest_bit(node)
        body = [f"def {fn}(value):", "    kind = type(value)", "    if kind is dict:"]
        emit_dict("value", node, "bits", 2, body)
        body.append("        return bits")
        body.append("    if kind is list:")
        body.append("        bits = 0")
        body.append("        for v in value:")
        body.append("            if v is not None:")
        body.append(f"                bits |= {fn}(v)")
        body.append("        return bits")
        body.append("    if kind is tuple and len(value) == 2 and type(value[0]) is str:")
        body.append("        branch = value[1]")
        body.append("        if branch is None:")
        body.append("            return 0")
        # A union branch is named by the record's short name (a path segment).
        body.append(f"        child = {fn}_branches.get(value[0].rsplit('.', 1)[-1])")
        body.append("        if child is None:")
        body.append("            return 0")
        body.append("        return child[0](branch) << child[1]")
        body.append(f"    return _present(value, {node_constant(node)}) >> {lo}")
        lines.extend(body)
        lines.append("")
        branches[fn] = {
            key: (function_of(child), _lowest_bit(child) - lo) for key, child in node[1].items()
        }

    branches: dict[str, dict[str, tuple[str, int]]] = {}
    top = function_of(root)  # every path is under the root: its lowest bit is bit 0
    code = compile("\n".join(lines), "<policy present>", "exec")
    exec(code, namespace)  # noqa: S102 - generated from the policy's field paths
    for fn, table in branches.items():
        namespace[f"{fn}_branches"] = {k: (namespace[f], n) for k, (f, n) in table.items()}
    present: Callable[[Any], int] = namespace[top]
    return present


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


class Policy:
    """A loaded, checked policy. Immutable; safe to share between threads."""

    def __init__(
        self, checked: Checked, *, digest: str, vocabulary: Vocabulary, source: str
    ) -> None:
        """Use :meth:`load` or :meth:`from_text`."""
        self._c = checked
        self._digest = digest
        self._vocab = vocabulary
        self.source = source
        self._leaves = dict(vocabulary.field_classes)
        # A leaf's bit is its rank among the paths in sorted order, so a bit set
        # lists its paths sorted (lowest bit first).
        self._paths_in_order = tuple(sorted(self._leaves))
        bit_of = {path: 1 << i for i, path in enumerate(self._paths_in_order)}
        self._root = _bits_tree(_build_tree(self._leaves), bit_of)
        self._present_compiled = _compile_present(self._root)
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
        self._outcomes: BoundedMemo[tuple[Any, ...], _Outcome] = BoundedMemo(
            _OUTCOME_CACHE_LIMIT
        )

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
        return cls(checked, digest=policy_digest(doc.data), vocabulary=vocab, source=source), []

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
            # as a method: ~0.3 us less per share step.)
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
            _present(event, self._root),
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

    # -- the plain path: the steps of the module docstring, as written ------------
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

    # -- the compiled path: plans ------------------------------------------------
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
