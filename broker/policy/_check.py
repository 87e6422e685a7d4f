"""Check a parsed policy document and build the registry and rules from it.

Every problem is collected (not just the first) with its line:column, so
``safeshare policy check`` can list them all in one run. A policy with any
problem is refused as a whole: fail closed.
"""

from __future__ import annotations

import base64
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from broker.policy._feed_keys import check_feed_keys
from broker.policy._yaml import Document, Path
from broker.policy.exceptions import Problem
from broker.policy.model import Agency, AgencyKey, Role, Rule, Subscriber
from broker.policy.vocabulary import (
    AGENCY_TYPES,
    ALWAYS_SHARED,
    CATEGORIES,
    DATA_CLASSES,
    PROTECTED_CLASSES,
    PURPOSES,
    RISK_LEVELS,
    RISK_RANK,
    ObligationCode,
)
from broker.topics import check_id

POLICY_VERSION = 1
# Local authorities are named as in the event (Subject.local_authority), e.g. the
# GSS code E06000027 for Torbay.
_LA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")


@dataclass(frozen=True)
class Vocabulary:
    """What the event schema allows a policy to name (from the codec)."""

    field_classes: Mapping[str, str]
    categories: frozenset[str] = CATEGORIES

    @property
    def payload_types(self) -> frozenset[str]:
        """Short record names of the payload union, read off the field paths."""
        return frozenset(
            p.split(".")[1] for p in self.field_classes if p.startswith("payload.") and "." in p[8:]
        )


@dataclass
class Checked:
    """The result of a successful check."""

    name: str
    description: str
    local_authorities: dict[str, str]
    purposes: dict[str, str]
    roles: dict[str, Role]
    agencies: dict[str, Agency]
    subscribers: dict[str, Subscriber]
    rules: list[Rule] = field(default_factory=list)
    event_signatures: str = "required"


_TOP = {
    "version": True,
    "name": True,
    "description": False,
    "local_authorities": True,
    "purposes": True,
    "roles": True,
    "agencies": True,
    "subscribers": True,
    "rules": True,
    "event_signatures": False,
}
_ROLE = {"description": True, "law_enforcement": False, "data_classes": True}
_AGENCY = {"id": True, "name": True, "type": True, "local_authorities": True, "keys": False}
_KEY = {"id": True, "public_key": True, "algorithm": False, "not_before": False, "not_after": False}
_SUBSCRIBER = {
    "id": True,
    "organisation": True,
    "description": False,
    "roles": True,
    "local_authorities": True,
    "purposes": True,
    "feed_keys": False,
}
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


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class _Checker:
    def __init__(self, doc: Document, vocab: Vocabulary) -> None:
        self.doc = doc
        self.vocab = vocab
        self.problems: list[Problem] = []

    # -- reporting ------------------------------------------------------------
    def problem(self, path: Path, message: str, *, key: bool = False) -> None:
        line, col = self.doc.place(path, key=key)
        self.problems.append(Problem(line, col, message))

    @staticmethod
    def where(path: Path) -> str:
        out = ""
        for p in path:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
        return out or "top level"

    # -- typed access -----------------------------------------------------------
    def mapping(self, value: Any, path: Path, keys: Mapping[str, bool]) -> dict[str, Any] | None:
        """A mapping with only the allowed keys (and every required one)."""
        if not isinstance(value, dict):
            self.problem(path, f"{self.where(path)}: expected a mapping")
            return None
        for k in value:
            if k not in keys:
                self.problem(
                    (*path, k),
                    f"unknown key {k!r} in {self.where(path)}{_suggest(k, keys)}",
                    key=True,
                )
        for k, required in keys.items():
            if required and k not in value:
                self.problem(path, f"{self.where(path)}: missing required key {k!r}")
        return value

    def string(self, value: Any, path: Path, *, blank_ok: bool = False) -> str | None:
        if not isinstance(value, str) or (not blank_ok and not value.strip()):
            self.problem(path, f"{self.where(path)}: expected a non-blank string")
            return None
        return value

    def boolean(self, value: Any, path: Path) -> bool | None:
        if not isinstance(value, bool):
            self.problem(path, f"{self.where(path)}: expected true or false")
            return None
        return value

    def strings(self, value: Any, path: Path, *, allow_empty: bool = False) -> list[str]:
        if not isinstance(value, list):
            self.problem(path, f"{self.where(path)}: expected a list of strings")
            return []
        if not value and not allow_empty:
            self.problem(path, f"{self.where(path)}: the list is empty (leave the key out instead)")
        out: list[str] = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item:
                self.problem((*path, i), f"{self.where((*path, i))}: expected a string")
                continue
            if item in seen:
                self.problem((*path, i), f"{item!r} is listed twice in {self.where(path)}")
            seen.add(item)
            out.append(item)
        return out

    def known(
        self, items: list[str], path: Path, vocab: Any, what: str, value: Any = None
    ) -> frozenset[str]:
        """Report each item not in ``vocab``; return the known ones."""
        raw = value if isinstance(value, list) else []
        for i, item in enumerate(items):
            if item not in vocab:
                j = raw.index(item) if item in raw else i
                self.problem((*path, j), f"unknown {what} {item!r}{_suggest(item, vocab)}")
        return frozenset(i for i in items if i in vocab)

    def risk(self, value: Any, path: Path) -> str | None:
        if value not in RISK_LEVELS:
            shown = value if isinstance(value, str) else repr(value)
            self.problem(
                path,
                f"unknown risk level {shown!r}{_suggest(str(value), RISK_LEVELS)};"
                f" use one of {', '.join(RISK_LEVELS)}",
            )
            return None
        return str(value)

    def ident(self, value: Any, path: Path, kind: str) -> str | None:
        s = self.string(value, path)
        if s is None:
            return None
        try:
            return check_id(kind, s)
        except ValueError as exc:
            self.problem(path, str(exc))
            return None

    # -- sections ---------------------------------------------------------------
    def run(self) -> Checked | None:
        top = self.mapping(self.doc.data, (), _TOP)
        if top is None:
            return None
        version = top.get("version")
        if "version" in top and (type(version) is not int or version != POLICY_VERSION):
            self.problem(("version",), f"unsupported policy version {version!r}; expected 1")
        name = self.string(top.get("name"), ("name",)) if "name" in top else None
        description = ""
        if "description" in top:
            description = self.string(top["description"], ("description",)) or ""
        las = self.named_table(
            top.get("local_authorities"), ("local_authorities",), "local authority"
        )
        purposes = self.named_table(top.get("purposes"), ("purposes",), "purpose", PURPOSES)
        roles = self.roles(top.get("roles"), ("roles",))
        agencies = self.agencies(top.get("agencies"), ("agencies",), las)
        subscribers = self.subscribers(
            top.get("subscribers"), ("subscribers",), las, purposes, roles
        )
        signatures = top.get("event_signatures", "required")
        if signatures not in ("required", "optional"):
            self.problem(
                ("event_signatures",),
                f"event_signatures must be 'required' or 'optional', not {signatures!r}",
            )
        checked = Checked(
            event_signatures=str(signatures),
            name=name or "",
            description=description,
            local_authorities=las,
            purposes=purposes,
            roles=roles,
            agencies=agencies,
            subscribers=subscribers,
        )
        checked.rules = self.rules(top.get("rules"), ("rules",), checked)
        self.shadowing(checked.rules)
        return checked if not self.problems else None

    def named_table(
        self, value: Any, path: Path, what: str, allowed: frozenset[str] | None = None
    ) -> dict[str, str]:
        if value is None:
            return {}
        if not isinstance(value, dict) or not value:
            self.problem(path, f"{self.where(path)}: expected a mapping of {what} ids to names")
            return {}
        out: dict[str, str] = {}
        for k, v in value.items():
            if allowed is not None and k not in allowed:
                self.problem(
                    (*path, k),
                    f"unknown {what} {k!r}{_suggest(k, allowed)}; the event schema allows"
                    f" {', '.join(sorted(allowed))}",
                    key=True,
                )
                continue
            if allowed is None and not _LA.match(k):
                self.problem((*path, k), f"invalid {what} code {k!r}", key=True)
                continue
            text = self.string(v, (*path, k))
            out[k] = text or ""
        return out

    def roles(self, value: Any, path: Path) -> dict[str, Role]:
        out: dict[str, Role] = {}
        if not isinstance(value, dict) or not value:
            if value is not None:
                self.problem(path, "roles: expected a mapping of role ids to role definitions")
            return out
        for rid, body in value.items():
            p = (*path, rid)
            self.ident(rid, p, "role")
            m = self.mapping(body, p, _ROLE)
            if m is None:
                continue
            desc = self.string(m.get("description"), (*p, "description")) or ""
            le = False
            if "law_enforcement" in m:
                le = bool(self.boolean(m["law_enforcement"], (*p, "law_enforcement")))
            classes: frozenset[str] = frozenset()
            if "data_classes" in m:
                dp = (*p, "data_classes")
                items = self.strings(m["data_classes"], dp, allow_empty=True)
                classes = self.known(items, dp, DATA_CLASSES, "data class", m["data_classes"])
                for i, c in enumerate(items):
                    if c in PROTECTED_CLASSES:
                        self.problem(
                            (*dp, i),
                            f"role {rid!r} may not be granted {c!r}: referrer and third-party"
                            " identities are shared only by a rule that names them in"
                            " 'explicit_grants'",
                        )
            out[rid] = Role(rid, desc, classes - PROTECTED_CLASSES, le)
        return out

    def _ids_unique(self, items: list[Any], path: Path, kind: str) -> None:
        first: dict[str, int] = {}
        for i, item in enumerate(items):
            if isinstance(item, dict) and isinstance(item.get("id"), str):
                ident = item["id"]
                if ident in first:
                    line, col = self.doc.place((*path, first[ident], "id"))
                    self.problem(
                        (*path, i, "id"),
                        f"duplicate {kind} id {ident!r} (first defined at line {line}:{col})",
                    )
                else:
                    first[ident] = i

    def _list(self, value: Any, path: Path) -> list[Any]:
        if not isinstance(value, list) or not value:
            if value is not None:
                self.problem(path, f"{self.where(path)}: expected a non-empty list")
            return []
        return value

    def agencies(self, value: Any, path: Path, las: dict[str, str]) -> dict[str, Agency]:
        items = self._list(value, path)
        self._ids_unique(items, path, "agency")
        out: dict[str, Agency] = {}
        for i, body in enumerate(items):
            p = (*path, i)
            m = self.mapping(body, p, _AGENCY)
            if m is None:
                continue
            aid = self.ident(m.get("id"), (*p, "id"), "agency") if "id" in m else None
            name = self.string(m.get("name"), (*p, "name")) if "name" in m else ""
            atype = m.get("type")
            if "type" in m and atype not in AGENCY_TYPES:
                self.problem(
                    (*p, "type"),
                    f"unknown agency type {atype!r}{_suggest(str(atype), AGENCY_TYPES)};"
                    f" use one of {', '.join(sorted(AGENCY_TYPES))}",
                )
            areas: frozenset[str] = frozenset()
            if "local_authorities" in m:
                ap = (*p, "local_authorities")
                got = self.strings(m["local_authorities"], ap)
                areas = self.known(got, ap, las, "local authority", m["local_authorities"])
            keys: list[AgencyKey] = []
            if "keys" in m:
                kp = (*p, "keys")
                if not isinstance(m["keys"], list):
                    self.problem(kp, f"{self.where(kp)}: expected a list (may be empty)")
                else:
                    for j, kb in enumerate(m["keys"]):
                        km = self.mapping(kb, (*kp, j), _KEY)
                        if km is None:
                            continue
                        kid = self.string(km.get("id"), (*kp, j, "id")) or ""
                        pub = self.string(km.get("public_key"), (*kp, j, "public_key")) or ""
                        alg = km.get("algorithm", "ed25519")
                        if alg != "ed25519":
                            self.problem((*kp, j, "algorithm"), "only 'ed25519' keys are supported")
                        try:
                            raw = base64.b64decode(pub, validate=True)
                        except ValueError:
                            raw = b""
                        if pub and len(raw) != 32:
                            self.problem(
                                (*kp, j, "public_key"),
                                "public_key must be a base64 Ed25519 public key (32 bytes)",
                            )
                        window: list[int | None] = []
                        for bound in ("not_before", "not_after"):
                            v = km.get(bound)
                            if v is None:
                                window.append(None)
                            elif isinstance(v, datetime):
                                window.append(int(v.timestamp() * 1000))
                            else:
                                try:
                                    t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
                                    window.append(int(t.timestamp() * 1000))
                                except ValueError:
                                    self.problem((*kp, j, bound), f"{bound}: not an ISO-8601 time")
                                    window.append(None)
                        keys.append(
                            AgencyKey(kid, pub, not_before_ms=window[0], not_after_ms=window[1])
                        )
            if aid and aid not in out and isinstance(atype, str) and atype in AGENCY_TYPES:
                out[aid] = Agency(aid, name or "", atype, areas, tuple(keys))
        return out

    def subscribers(
        self,
        value: Any,
        path: Path,
        las: dict[str, str],
        purposes: dict[str, str],
        roles: dict[str, Role],
    ) -> dict[str, Subscriber]:
        items = self._list(value, path)
        self._ids_unique(items, path, "subscriber")
        out: dict[str, Subscriber] = {}
        for i, body in enumerate(items):
            p = (*path, i)
            m = self.mapping(body, p, _SUBSCRIBER)
            if m is None:
                continue
            sid = self.ident(m.get("id"), (*p, "id"), "subscriber") if "id" in m else None
            org = (
                self.string(m.get("organisation"), (*p, "organisation"))
                if "organisation" in m
                else ""
            )
            desc = ""
            if "description" in m:
                desc = self.string(m["description"], (*p, "description")) or ""
            rp = (*p, "roles")
            srole = self.strings(m.get("roles"), rp) if "roles" in m else []
            self.known(srole, rp, roles, "role", m.get("roles"))
            le_roles = {r for r in srole if r in roles and roles[r].law_enforcement}
            if le_roles and len(le_roles) != len([r for r in srole if r in roles]):
                self.problem(
                    rp,
                    f"subscriber {sid!r} mixes law-enforcement roles"
                    f" ({', '.join(sorted(le_roles))}) with other roles: its lawful basis"
                    " (DPA 2018 Part 3 or UK GDPR) would be ambiguous; register it as two"
                    " subscribers",
                )
            areas: frozenset[str] = frozenset()
            if "local_authorities" in m:
                ap = (*p, "local_authorities")
                got = self.strings(m["local_authorities"], ap)
                areas = self.known(got, ap, las, "local authority", m["local_authorities"])
            sp: frozenset[str] = frozenset()
            if "purposes" in m:
                pp = (*p, "purposes")
                sp = self.known(
                    self.strings(m["purposes"], pp), pp, purposes, "purpose", m["purposes"]
                )
            fk = check_feed_keys(self, m.get("feed_keys"), (*p, "feed_keys"))
            if sid and sid not in out:
                out[sid] = Subscriber(
                    feed_keys=fk,
                    id=sid,
                    organisation=org or "",
                    roles=tuple(r for r in srole if r in roles),
                    local_authorities=areas,
                    purposes=sp,
                    law_enforcement=bool(le_roles),
                    description=desc,
                )
        return out

    # -- rules --------------------------------------------------------------------
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


def check(doc: Document, vocab: Vocabulary) -> tuple[Checked | None, list[Problem]]:
    """Check ``doc``; return what it defines (None on any problem) and the problems."""
    checker = _Checker(doc, vocab)
    for path, label in sorted(vocab.field_classes.items()):
        if label not in DATA_CLASSES:
            checker.problems.append(
                Problem(1, 1, f"event field {path} has data class {label!r}, unknown to policy")
            )
    result = checker.run()
    return (result if not checker.problems else None), checker.problems


__all__ = ["ALWAYS_SHARED", "Checked", "Vocabulary", "check"]
