"""What the twins rule knows about given names: which are names in their own right.

Record linkage (broker/identity/linkage.py) may never join two children, and
twins share everything but the given name. Whether two given names are one
child's (a familiar form, a keying error) or two children's depends on what
names children in the partnership are actually given, which the index counts:

- a *name of its own* is at least 1 in 200 of the index's records (Elsie,
  Alice, Millie: twins may be given both, though the nicknames data set lists
  one as a form of the other);
- a *name in use* is at least 1 in 1,000 (Max, Luca, a familiar form such as
  Ollie): not a one-off misspelling;
- a *real name* is a name of its own or one the nicknames data set knows
  (Willie): one letter from another real name (Millie) is another name, not
  a keying error.

These counts are the index's own (recounted every 1,000 records), never a list
tuned to a population.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from rapidfuzz.distance import OSA

from broker.identity.comparisons import familiar_typo
from broker.identity.nicknames import familiar_forms, forms, listed, same_name

__all__ = ["GivenNames", "Tally"]

#: The least share of the index's records a given name has to be a name of its
#: own (one child in 200: Elsie, Alice; a rare familiar form such as Belle is not).
OWN_NAME: Final = 5e-3
#: The least share of records a name in use has (1 in 1,000: Max, Luca).
IN_USE: Final = 1e-3
#: Below this many records the index is too young to tell (term frequencies too).
YOUNG: Final = 1000


class Tally(Counter[str]):
    """A Counter that keeps its total as it changes (``Counter.total()`` sums every
    value, and the twins rule asks for it for every record compared)."""

    def __init__(self, counts: Mapping[str, int] | None = None) -> None:
        super().__init__()
        self.sum = 0
        for key, value in (counts or {}).items():
            self[key] = value

    def __setitem__(self, key: str, value: int) -> None:
        self.sum += value - self.get(key, 0)
        super().__setitem__(key, value)

    def __delitem__(self, key: object) -> None:
        if isinstance(key, str):
            self.sum -= self.get(key, 0)
        super().__delitem__(key)


@dataclass
class GivenNames:
    """The index's counts of given names (shared with it), and the rules on them."""

    counts: Tally
    _cache: tuple[int, frozenset[str], frozenset[str]] | None = field(default=None, repr=False)

    def share(self, name: str) -> float | None:
        """Share of indexed records with this given name (None while the index is young)."""
        total = self.counts.sum
        if total < YOUNG:
            return None
        return self.counts[name] / total

    def _recount(self) -> tuple[frozenset[str], frozenset[str]] | None:
        total = self.counts.sum
        if total < YOUNG:
            return None
        if self._cache is None or total // YOUNG != self._cache[0]:
            own = frozenset(n for n, c in self.counts.items() if c >= total * OWN_NAME)
            used = frozenset(n for n, c in self.counts.items() if c >= total * IN_USE)
            self._cache = (total // YOUNG, own, used)
        return self._cache[1], self._cache[2]

    def own(self) -> frozenset[str] | None:
        """The names of their own (None while the index is young)."""
        known = self._recount()
        return None if known is None else known[0]

    def in_use(self) -> frozenset[str] | None:
        """The names in use, names of their own among them (None while young)."""
        known = self._recount()
        return None if known is None else known[1]

    def real(self, name: str) -> bool:
        """A name of its own or one the nicknames data set knows (Willie, Max), not
        a keying error (Mxa)."""
        own = self.own()
        return listed(name) or (own is not None and name in own)

    def of_their_own(
        self, a: str | None, b: str | None, level: int | None, *, same_home: bool = False,
        typo: int | None = 1,
    ) -> int | None:
        """1 if two given names are close spellings or familiar forms of each other
        (given ``level`` 1 or 2), or one is a keying error of the other or of a
        form of it (``typo`` 0: Ella, Bella for Isabella), and each is a name of
        its own; else 0; None if null.

        The nicknames data set lists Elsie as a form of Alice, and Millie of Emily;
        Sophie and Sophia are a letter apart: twins may be given both. Such a pair
        is not the same name for the twins rule once the index holds enough
        records to tell. Until then (a young index) a close spelling or a
        familiar form at the same home counts as two names: twins living together
        are never linked for want of counts; the pair goes to a person (a keying
        error, Ixla for Isla, does not: it is no name at all)."""
        if a is None or b is None or level is None:
            return None
        if level == 0 or (level > 2 and typo != 0):
            return 0
        ta, tb = self.share(a), self.share(b)
        if ta is None or tb is None:
            return int(same_home and level <= 2)
        return int(min(ta, tb) >= OWN_NAME)

    def ambiguous(self, given: str | None) -> bool:
        """True if ``given`` is a name of its own and a familiar form of another name
        of its own (Millie: Amelia, Emily; Elsie: Alice), so that it may be either
        twin's: one recorded under a familiar form that is the other's name. While
        the index is too young to tell names of their own, a familiar form of
        another name the index holds."""
        if given is None:
            return False
        others = forms(given) - {given}
        own = self.own()
        if own is None:
            return any(self.counts[n] > 0 for n in others)
        return given in own and not others.isdisjoint(own)

    def unmistakable_typo(self, a: str | None, b: str | None) -> bool:
        """True if one given name is one keying error from the other, is no real name
        itself, the other is a name of its own, and no other name in use is one
        keying error from it: Aa and Iy can only be Ava and Ivy; Mxa and Mai may
        be Mia or Max, Lua Luna or Luca (twins' names: no); Willie is a name, not
        a keying error of Millie."""
        if a is None or b is None or OSA.distance(a, b) != 1:
            return False
        own, used = self.own(), self.in_use()
        if own is None or used is None:
            return False
        for typed, meant in ((a, b), (b, a)):
            if typed in own or meant not in own or listed(typed):
                continue
            if not any(OSA.distance(typed, n) <= 1 for n in used if n not in (meant, typed)):
                return True
        return False

    def one_name_mistyped(self, a: str | None, b: str | None) -> bool:
        """True if two given names are each one keying error from the same name of
        its own and from no other name in use, and neither is a real name: Abigasl
        and Abizail are Abigail twice mistyped (a name in use near either, as
        Max is near Mxa: no)."""
        if a is None or b is None or len(a) < 4 or len(b) < 4:
            return False
        own, used = self.own(), self.in_use()
        if own is None or used is None or a in used or b in used or listed(a) or listed(b):
            return False
        near_a = {n for n in used if OSA.distance(a, n) <= 1}
        return (len(near_a) == 1 and not near_a.isdisjoint(own)
                and near_a == {n for n in used if OSA.distance(b, n) <= 1})

    def unmistakable_familiar_typo(self, a: str | None, b: str | None) -> bool:
        """True if one given name is one keying error from a familiar form of the
        other (``comparisons.familiar_typo``: Ammy for Amelia's Amy), is no name
        itself, and every name in use one keying error from it is a form of that
        name: then it is that name mistyped, not another child's (Albie is a name,
        not Abbie mistyped; Nanny may be Danny or Fanny: no)."""
        if a is None or b is None or not familiar_typo(a, b):
            return False
        used = self.in_use()
        if used is None:
            return False
        for typed, meant in ((a, b), (b, a)):
            if typed in used or listed(typed):
                continue
            kin = familiar_forms(meant) | forms(meant)
            if not any(len(n) >= 3 and OSA.distance(typed, n) <= 1 for n in kin):
                continue
            if all(n in kin for n in used if n != typed and OSA.distance(typed, n) <= 1):
                return True
        return False

    def two_names(self, a: str | None, b: str | None) -> bool:
        """True if two given names one keying error apart are both real names (Millie
        and Willie, William's familiar form): two names, not a slip of one."""
        return a is not None and b is not None and a != b and self.real(a) and self.real(b)

    def another_name(self, a: str | None, b: str | None) -> bool:
        """True if two given names are each a name of its own, and neither is a
        familiar form of the other (Alice, Elizabeth; Isabella, Isabelle; Evie,
        Evelyn): two children, whatever familiar form they may share (Lisa, Bella).
        Forms of each other (Amelia, Millie) are not: one child is often recorded
        under both.

        Also true if one is a name of its own and the other meets it only at a
        third name while being a familiar form of another name of its own, not
        a form of the first: Meg and Daisy are both Margaret's in the data set,
        but Meg is Megan's, and Daisy a name given in its own right (twins Megan
        and Daisy Webb were joined through "Meg"). Mel for Millie is not: Mel's
        Amelia is a form of Millie."""
        own = self.own()
        if own is None or a is None or b is None or a == b:
            return False
        if a in own and b in own and not same_name(a, b):
            return True
        for typed, known in ((a, b), (b, a)):
            if known in own and same_name(typed, known) and not _direct(typed, known) and any(
                    other in own and other != known and not _direct(other, known)
                    for other in forms(typed) - {typed}):
                return True
        return False

    def apart(self, a: Iterable[str | None], b: Iterable[str | None]) -> bool:
        """True if two children's given names tell them apart (:meth:`another_name`
        for some name of each)."""
        names_b = {y for y in b if y is not None}
        return any(self.another_name(x, y) for x in set(a) for y in names_b)


def _direct(a: str, b: str) -> bool:
    """True if one given name is a form of the other (Meg, Megan), not only through a
    third name both are forms of (Meg, Daisy: Margaret)."""
    return a in forms(b) or b in forms(a)
