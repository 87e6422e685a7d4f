"""The policy checker's ground: what a policy may name, what a check returns, typed access.

:class:`CheckerBase` reads a parsed document's values by type (a mapping with
its known keys, a string, a list of known words, a risk level, an id) and
collects every problem with its line:column rather than stopping at the first.
The sections of a policy are checked by its subclasses in
:mod:`broker.policy._check_rules` (rules) and :mod:`broker.policy._check`
(the registry and the whole document).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from broker.policy._yaml import Document, Path
from broker.policy.exceptions import Problem
from broker.policy.model import Agency, ConsentRecorder, Role, Rule, Subscriber
from broker.policy.vocabulary import (
    CATEGORIES,
    RISK_LEVELS,
)
from broker.topics import check_id


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
    clocks: Any = None  # broker.loop.rules.ClockPolicy
    identity: Any = None  # broker.identity.linkage.Thresholds
    identity_deciders: tuple[str, ...] = ()
    consent_recorders: tuple[ConsentRecorder, ...] = ()
    patterns: Any = None  # dict[str, broker.patterns.detectors.Threshold]


def _suggest(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class CheckerBase:
    """Problems collected over one document, and typed access to its values."""

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
