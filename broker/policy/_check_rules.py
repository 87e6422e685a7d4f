"""The policy checker's rules section: each rule, its conditions, and rules no event can reach."""

from __future__ import annotations

from typing import Any

from broker.policy._check_base import Checked, CheckerBase, Vocabulary, _suggest
from broker.policy._yaml import Path
from broker.policy.exceptions import Problem
from broker.policy.model import Rule
from broker.policy.vocabulary import (
    AGENCY_TYPES,
    DATA_CLASSES,
    PROTECTED_CLASSES,
    RISK_RANK,
    ObligationCode,
)

_RULE = {
    "id": True,
    "description": True,
    "when": False,
    "effect": True,
    "purpose": False,
    "without_consent": False,
    "data_classes": False,
    "explicit_grants": False,
    "obligations": False,
    "reason": False,
}
_SHARE_ONLY = ("purpose", "without_consent", "data_classes", "explicit_grants", "obligations")
_WHEN = {
    "source_agencies": False,
    "source_agency_types": False,
    "categories": False,
    "payload_types": False,
    "subscribers": False,
    "subscriber_roles": False,
    "min_risk": False,
    "break_glass": False,
    "cross_area": False,
}
_WITHOUT_CONSENT = {"min_risk": True}


class RuleChecks(CheckerBase):
    """Checks of the ``rules`` section (a base class of the whole-document checker)."""

    def rules(self, value: Any, path: Path, c: Checked) -> list[Rule]:
        items = self._list(value, path)
        self._ids_unique(items, path, "rule")
        out: list[Rule] = []
        for i, body in enumerate(items):
            rule = self.rule(body, (*path, i), i, c)
            if rule is not None:
                out.append(rule)
        return out

    def _cond(
        self, when: dict[str, Any], key: str, wp: Path, vocab: Any, what: str
    ) -> frozenset[str] | None:
        if key not in when:
            return None
        items = self.strings(when[key], (*wp, key))
        if vocab is None:
            return frozenset(items)
        return self.known(items, (*wp, key), vocab, what, when[key])

    def rule(self, body: Any, p: Path, index: int, c: Checked) -> Rule | None:
        m = self.mapping(body, p, _RULE)
        if m is None:
            return None
        n_before = len(self.problems)
        rid = self.ident(m.get("id"), (*p, "id"), "rule") if "id" in m else None
        desc = self.string(m.get("description"), (*p, "description")) if "description" in m else ""
        effect = m.get("effect")
        if "effect" in m and effect not in ("share", "withhold"):
            self.problem(
                (*p, "effect"),
                f"effect must be 'share' or 'withhold', not {effect!r}"
                f"{_suggest(str(effect), ('share', 'withhold'))}",
            )
        when: dict[str, Any] = {}
        wp = (*p, "when")
        if "when" in m:
            when = self.mapping(m["when"], wp, _WHEN) or {}
        agency_ids = self._cond(when, "source_agencies", wp, c.agencies, "agency")
        agency_types = self._cond(when, "source_agency_types", wp, AGENCY_TYPES, "agency type")
        categories = self._cond(when, "categories", wp, self.vocab.categories, "event category")
        payload_types = self._cond(
            when, "payload_types", wp, self.vocab.payload_types, "payload type"
        )
        sub_ids = self._cond(when, "subscribers", wp, c.subscribers, "subscriber")
        sub_roles = self._cond(when, "subscriber_roles", wp, c.roles, "role")
        min_risk = self.risk(when["min_risk"], (*wp, "min_risk")) if "min_risk" in when else None
        break_glass = None
        if "break_glass" in when:
            break_glass = self.boolean(when["break_glass"], (*wp, "break_glass"))
        cross_area = False
        if "cross_area" in when:
            cross_area = bool(self.boolean(when["cross_area"], (*wp, "cross_area")))

        purpose: str | None = None
        override: str | None = None
        narrow: frozenset[str] | None = None
        grants: frozenset[str] = frozenset()
        obligations: list[ObligationCode] = []
        reason = ""
        if effect == "withhold":
            for k in _SHARE_ONLY:
                if k in m:
                    self.problem((*p, k), f"{k!r} has no meaning in a withhold rule", key=True)
            if "reason" not in m:
                self.problem(
                    p, "a withhold rule needs a 'reason' a data protection officer can read"
                )
            else:
                reason = self.string(m["reason"], (*p, "reason")) or ""
        elif effect == "share":
            if "reason" in m:
                reason = self.string(m["reason"], (*p, "reason")) or ""
            if "purpose" not in m:
                self.problem(
                    p,
                    "a share rule needs a 'purpose': consent is sought and recorded per purpose,"
                    " and a recipient may only receive data for a purpose it is registered for",
                )
            else:
                purpose = self.string(m["purpose"], (*p, "purpose"))
                if purpose is not None and purpose not in c.purposes:
                    self.problem(
                        (*p, "purpose"),
                        f"unknown purpose {purpose!r}{_suggest(purpose, c.purposes)}",
                    )
                    purpose = None
            if "without_consent" in m:
                op = (*p, "without_consent")
                om = self.mapping(m["without_consent"], op, _WITHOUT_CONSENT)
                if om is not None and "min_risk" in om:
                    override = self.risk(om["min_risk"], (*op, "min_risk"))
            if "data_classes" in m:
                dp = (*p, "data_classes")
                items = self.strings(m["data_classes"], dp)
                narrow = self.known(items, dp, DATA_CLASSES, "data class", m["data_classes"])
                for i, cl in enumerate(items):
                    if cl in PROTECTED_CLASSES:
                        self.problem(
                            (*dp, i), f"{cl!r} can only be granted under 'explicit_grants'"
                        )
            if "explicit_grants" in m:
                gp = (*p, "explicit_grants")
                items = self.strings(m["explicit_grants"], gp)
                for i, cl in enumerate(items):
                    if cl not in PROTECTED_CLASSES:
                        self.problem(
                            (*gp, i),
                            f"'explicit_grants' takes only referrer and third_party, not {cl!r}"
                            + (
                                ""
                                if cl in DATA_CLASSES
                                else f" (unknown data class{_suggest(cl, DATA_CLASSES)})"
                            ),
                        )
                grants = frozenset(items) & PROTECTED_CLASSES
            if "obligations" in m:
                obp = (*p, "obligations")
                codes = {str(o) for o in ObligationCode}
                for code in self.known(
                    self.strings(m["obligations"], obp), obp, codes, "obligation", m["obligations"]
                ):
                    obligations.append(ObligationCode(code))
                obligations.sort()

        # Resolve against the registry: which agencies and subscribers can this
        # rule ever apply to? (Also makes decide() a set lookup.)
        agencies = frozenset(
            a.id
            for a in c.agencies.values()
            if (agency_ids is None or a.id in agency_ids)
            and (agency_types is None or a.type in agency_types)
        )
        subs = set()
        for s in c.subscribers.values():
            if sub_ids is not None and s.id not in sub_ids:
                continue
            if sub_roles is not None and not (sub_roles & set(s.roles)):
                continue
            if effect == "share" and purpose is not None and purpose not in s.purposes:
                if sub_ids is not None:
                    self.problem(
                        (*wp, "subscribers"),
                        f"rule {rid!r} names subscriber {s.id!r}, which is not registered for"
                        f" purpose {purpose!r}: it could never receive data under this rule",
                    )
                continue
            subs.add(s.id)
        if len(self.problems) > n_before or rid is None or effect not in ("share", "withhold"):
            return None
        if not agencies:
            self.problem(
                wp, f"rule {rid!r} can never match: no registered agency fits its source conditions"
            )
            return None
        if not subs:
            self.problem(
                wp,
                f"rule {rid!r} can never match: no registered subscriber fits its subscriber"
                " conditions" + (f" and purpose {purpose!r}" if purpose else ""),
            )
            return None
        line, col = self.doc.place(p)
        return Rule(
            id=rid,
            index=index,
            line=line,
            column=col,
            description=desc or "",
            effect=str(effect),
            source_agencies=agency_ids,
            source_agency_types=agency_types,
            categories=categories,
            payload_types=payload_types,
            subscriber_ids=sub_ids,
            subscriber_roles=sub_roles,
            min_risk=min_risk,
            break_glass=break_glass,
            cross_area=cross_area,
            purpose=purpose,
            override_min_risk=override,
            data_classes=narrow,
            explicit_grants=grants,
            obligations=tuple(obligations),
            reason=reason,
            agencies=agencies,
            subscribers=frozenset(subs),
        )

    def shadowing(self, rules: list[Rule]) -> None:
        """Report every rule that an earlier rule fully covers (first match wins)."""
        for j, later in enumerate(rules):
            for earlier in rules[:j]:
                if _covers(earlier, later, self.vocab):
                    self.problems.append(
                        Problem(
                            later.line,
                            later.column,
                            f"rule {later.id!r} is unreachable: rule {earlier.id!r} at"
                            f" {earlier.place} matches every event and subscriber it matches,"
                            " and the first matching rule wins",
                        )
                    )
                    break


def _set_covers(a: frozenset[str] | None, b: frozenset[str] | None, universe: Any) -> bool:
    if a is None:
        return True
    if b is None:
        return universe is not None and a >= frozenset(universe)
    return a >= b


def _covers(a: Rule, b: Rule, vocab: Vocabulary) -> bool:
    """True if every (event, subscriber) that ``b`` matches is matched by ``a``."""
    return (
        a.agencies >= b.agencies
        and a.subscribers >= b.subscribers
        and _set_covers(a.categories, b.categories, vocab.categories)
        and _set_covers(a.payload_types, b.payload_types, vocab.payload_types)
        and RISK_RANK[a.min_risk or "LOW"] <= RISK_RANK[b.min_risk or "LOW"]
        and (a.break_glass is None or a.break_glass == b.break_glass)
        and (a.cross_area or not b.cross_area)
    )
