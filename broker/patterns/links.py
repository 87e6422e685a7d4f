"""Children a person linked as one: which pseudonym each is counted under.

A LINK (an ``IdentityNotice`` on the detector's feed) says the child under one
pseudonym is the child under another: the detectors then count the first's
observations as the second's, the ones already held too (folded when counted,
never rewritten), so an UNLINK separates them again by forgetting the link.
Kept as ``merged-in -> survivor``; a chain (A into B, B into C) counts all
three as C. Rebuilt from the detector's changelog (``l|<merged-in>``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

_MAX_HOPS = 64  # a chain longer than any real one: a cycle is refused before this


@dataclass
class Links:
    into: dict[str, str] = field(default_factory=dict)  # merged-in pseudonym -> survivor
    _members: dict[str, tuple[str, ...]] = field(default_factory=dict)  # survivor -> group

    def canonical(self, child: str) -> str:
        """The pseudonym ``child`` is counted under (itself unless linked)."""
        if not self.into:
            return child
        for _ in range(_MAX_HOPS):
            nxt = self.into.get(child)
            if nxt is None:
                break
            child = nxt
        return child

    def members(self, canonical: str) -> tuple[str, ...]:
        """Every pseudonym counted under ``canonical`` (itself first)."""
        return self._members.get(canonical, (canonical,))

    def set(self, other: str, into: str | None) -> bool:
        """Link ``other`` into ``into`` (None: unlink it). False if nothing changed or
        the link would make a cycle (two children each counted as the other)."""
        if self.into.get(other) == into or other == into:
            return False
        if into is not None and self.canonical(into) == other:
            return False
        if into is None:
            del self.into[other]
        else:
            self.into[other] = into
        groups: dict[str, list[str]] = {}
        for child in sorted(self.into):
            groups.setdefault(self.canonical(child), []).append(child)
        self._members = {c: (c, *sorted(m)) for c, m in groups.items()}
        return True
