"""Check a parsed policy document and build the registry and rules from it.

Every problem is collected (not just the first) with its line:column, so
``safeshare policy check`` can list them all in one run. A policy with any
problem is refused as a whole: fail closed.
"""

from __future__ import annotations

import base64
import re
from dataclasses import replace
from datetime import datetime
from typing import Any

from broker.policy._check_base import Checked, Vocabulary, _suggest
from broker.policy._check_consent import check_consent
from broker.policy._check_rules import RuleChecks
from broker.policy._clocks import check_clocks, check_escalate_to
from broker.policy._feed_keys import check_feed_keys
from broker.policy._identity import check_deciders, check_identity
from broker.policy._patterns import check_patterns
from broker.policy._yaml import Document, Path
from broker.policy.exceptions import Problem
from broker.policy.model import Agency, AgencyKey, Role, Subscriber
from broker.policy.vocabulary import (
    AGENCY_TYPES,
    ALWAYS_SHARED,
    DATA_CLASSES,
    PROTECTED_CLASSES,
    PURPOSES,
)

POLICY_VERSION = 1
# Local authorities are named as in the event (Subject.local_authority), e.g. the
# GSS code E06000027 for Torbay.
_LA = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")

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
    "clocks": False,
    "identity": False,
    "consent": True,
    "patterns": False,
}
_ROLE = {"description": True, "law_enforcement": False, "data_classes": True}
_AGENCY = {
    "id": True, "name": True, "type": True, "local_authorities": True, "keys": False,
    "signing": False, "notify_on_consultation": False,
}
SIGNING = ("agency", "gateway")
_KEY = {"id": True, "public_key": True, "algorithm": False, "not_before": False, "not_after": False}
_SUBSCRIBER = {
    "id": True,
    "organisation": True,
    "description": False,
    "roles": True,
    "local_authorities": True,
    "purposes": True,
    "feed_keys": False,
    "escalate_to": False,
}


class _Checker(RuleChecks):
    """The whole document: its top level, the registry sections, then the rules."""

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
        checked.clocks = check_clocks(self, top.get("clocks"), ("clocks",))
        checked.identity = check_identity(self, top.get("identity"), ("identity",))
        checked.identity_deciders = check_deciders(
            self, top.get("identity"), ("identity",), subscribers
        )
        checked.consent_recorders = check_consent(
            self, top.get("consent"), ("consent",), agencies, purposes
        )
        checked.patterns = check_patterns(self, top.get("patterns"), ("patterns",))
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
            signing = m.get("signing", "agency")
            if signing not in SIGNING:
                self.problem(
                    (*p, "signing"),
                    f"signing: {signing!r} is not one of {', '.join(SIGNING)}",
                )
                signing = "agency"
            elif signing == "gateway" and not keys:
                self.problem(
                    (*p, "signing"),
                    "signing: gateway needs the gateway's key registered under 'keys'",
                )
            notify = self.notify_classes(m.get("notify_on_consultation"),
                                         (*p, "notify_on_consultation"))
            if aid and aid not in out and isinstance(atype, str) and atype in AGENCY_TYPES:
                out[aid] = Agency(aid, name or "", atype, areas, tuple(keys), signing, notify)
        return out

    def notify_classes(self, value: Any, path: Path) -> frozenset[str]:
        """``notify_on_consultation``: ``all`` or a list of data classes."""
        if value is None:
            return frozenset()
        if value == "all":
            return frozenset(DATA_CLASSES)
        items = self.strings(value, path) if isinstance(value, list) else []
        if not isinstance(value, list):
            self.problem(path, f"{self.where(path)}: expected 'all' or a list of data classes")
        return self.known(items, path, DATA_CLASSES, "data class", value)

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
        escalations: dict[int, tuple[Any, Any]] = {}
        for i, body in enumerate(items):
            p = (*path, i)
            m = self.mapping(body, p, _SUBSCRIBER)
            if m is None:
                continue
            if "escalate_to" in m:
                escalations[i] = (m.get("id"), m["escalate_to"])
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
        tiers = check_escalate_to(self, escalations, set(out), path)
        for i, (sid, _) in escalations.items():
            if sid in out:
                out[sid] = replace(out[sid], escalate_to=tiers[i])
        return out


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
