"""The comparison levels of record linkage (broker/identity/linkage.py), one function each.

Splink's ``NameComparison``, ``DateOfBirthComparison`` and
``PostcodeComparison``, level by level, computed with rapidfuzz (Jaro-Winkler,
Levenshtein, OSA) so that the weights Splink trained for them mean what Splink
meant; the given name as one comparison with a familiar form as a level; the
keying-error test the twins rule uses; and Soundex for blocking.
"""

from __future__ import annotations

from datetime import date
from typing import Final

from rapidfuzz.distance import OSA, JaroWinkler, Levenshtein

from broker.identity.nicknames import familiar_forms, formal_forms, same_name


def name_level(a: str | None, b: str | None) -> int | None:
    """NameComparison: exact 0, JW>=0.92 1, >=0.88 2, >=0.70 3, else 4; None if null."""
    if a is None or b is None:
        return None
    if a == b:
        return 0
    jw = JaroWinkler.similarity(a, b)
    return 1 if jw >= 0.92 else 2 if jw >= 0.88 else 3 if jw >= 0.70 else 4


def family_level(a: str | None, b: str | None) -> int | None:
    """The family name: NameComparison with one keying error as a level of its own:
    exact 0, JW>=0.92 1, one keying error (OSA distance 1, both four letters or
    more: Wqrd for Ward, Jnoes for Jones) 2, JW>=0.88 3, >=0.70 4, else 5; None
    if null. One letter wrong is far rarer between two families' names than a
    Jaro-Winkler of 0.7-0.88, as for the given name."""
    if a is None or b is None:
        return None
    if a == b:
        return 0
    jw = JaroWinkler.similarity(a, b)
    if jw >= 0.92:
        return 1
    if len(a) >= 4 and len(b) >= 4 and OSA.distance(a, b) <= 1:
        return 2
    return 3 if jw >= 0.88 else 4 if jw >= 0.70 else 5


def given_level(a: str | None, b: str | None, *, keying: bool = True) -> int | None:
    """The given name as one comparison: exact 0, JW>=0.92 1, a familiar form 2 (Jim
    for James, Jim and Jimmy: ``nicknames.same_name``), one keying error of it or
    of a form of it 3 (``typo_level``: Tqeo for Theo, Jaems for Jamie), one
    keying error of a familiar form of it 4 (``familiar_typo``: Ammy for Amelia's
    Amy), JW>=0.88 5, >=0.70 6, else 7; None if null.

    Spelling and formal form are one question, is it the same name? Weighed as
    two comparisons, an exact name counted twice and a typo or a nickname as a
    disagreement. A keying error has a level of its own: one letter wrong is far
    rarer between two children's names than a Jaro-Winkler of 0.7-0.88.
    ``keying=False``: two names, not a slip (Millie and Willie), so neither keying
    level."""
    if a is None or b is None:
        return None
    if a == b:
        return 0
    jw = JaroWinkler.similarity(a, b)
    if jw >= 0.92:
        return 1
    if same_name(a, b):
        return 2
    if keying and typo_level(a, b) == 0:
        return 3
    if keying and familiar_typo(a, b):
        return 4
    return 5 if jw >= 0.88 else 6 if jw >= 0.70 else 7


def dob_level(a: str | None, b: str | None) -> int | None:
    """DateOfBirthComparison with two keying errors as levels of their own: exact 0,
    day and month swapped 1, one day apart 2, another single digit off (Levenshtein
    <= 1) 3, within a month 4, a year 5, ten years 6, else 7; None if null.

    A swap or a day's slip is ten times less likely between two children by chance
    than any one digit off (the trained u), so each has its own weight."""
    if a is None or b is None:
        return None
    if a == b:
        return 0
    if a == _swapped(b):
        return 1
    days = abs((date.fromisoformat(a) - date.fromisoformat(b)).days)
    if days <= 1:
        return 2
    if Levenshtein.distance(a, b) <= 1:
        return 3
    return 4 if days <= 31 else 5 if days <= 366 else 6 if days <= 3660 else 7


def _swapped(iso: str) -> str:
    """The date with day and month swapped (2010-03-14 -> 2010-14-03, not a date)."""
    return f"{iso[:4]}-{iso[8:10]}-{iso[5:7]}"


def postcode_level(a: str | None, b: str | None) -> int | None:
    """PostcodeComparison: full 0, sector 1, district 2, area 3, else 4; None if null."""
    if a is None or b is None:
        return None
    if a == b:
        return 0
    # outward code + first digit of the inward code = sector
    if a[:-2] == b[:-2]:
        return 1
    if a[:-3] == b[:-3]:
        return 2
    return 3 if _area(a) == _area(b) else 4


def _area(postcode: str) -> str:
    """The postcode area: the letters at the start of the outward code (TQ of TQ12 4AB)."""
    n = 0
    while n < len(postcode) and postcode[n].isalpha():
        n += 1
    return postcode[:n]


def typo_level(a: str | None, b: str | None) -> int | None:
    """0 if two given names differ by one keying error (a letter dropped, added,
    replaced or two swapped: Harjy, Wiflow), or one is a keying error of a form of
    the other (Jaems for Jamie: James; Olitia for Ollie: Olivia), else 1; None if
    null. One of the two is the name as written: a form of one a keying error
    from a form of the other is two steps from it (Lily, Robert: Lilly, Billy);
    the form is a formal one, at least as long (``formal_forms``: Chuck is not a
    keying error of Charlotte through "Chick").
    The name mistyped and the name it is measured against have four letters or
    more (Ava, Eva never; but see ``GivenNames.unmistakable_typo``); the other
    may be a short form (Danirl for Dan: Daniel; Arthar for Art: Arthur). Not
    weighed: it only keeps such a name from counting as another child's (the
    twins rule)."""
    if a is None or b is None:
        return None
    if len(a) >= 4 and len(b) >= 4 and OSA.distance(a, b) <= 1:
        return 0
    near = (len(a) >= 4 and any(OSA.distance(a, y) <= 1 for y in formal_forms(b) if len(y) >= 4)
            ) or (len(b) >= 4 and any(OSA.distance(x, b) <= 1 for x in formal_forms(a)
                                      if len(x) >= 4))
    return 0 if near else 1


def familiar_typo(a: str, b: str) -> bool:
    """True if one given name (three letters or more) is one keying error from a
    familiar form (three letters or more) of the other or of a formal form of it
    (Ammy: Amy, Amelia's; Fiffi: Fifi, Phoebe's). Slips in nicknames are as common
    as in names, but far more names lie one letter from some nickname, hence a
    level of its own below the name's keying errors."""
    return (len(a) >= 3 and any(len(n) >= 3 and OSA.distance(a, n) <= 1
                                for n in familiar_forms(b))) or (
        len(b) >= 3 and any(len(n) >= 3 and OSA.distance(n, b) <= 1 for n in familiar_forms(a)))


_SOUNDEX: Final = {c: str(d) for d, letters in enumerate(
    ("aeiouyhw", "bfpv", "cgjkqsxz", "dt", "l", "mn", "r")) for c in letters}


def soundex(name: str) -> str:
    """American Soundex (Smith and Smyth S530): the first letter and three digits, for
    blocking on a family name as it sounds (a typo seldom changes its code)."""
    letters = [c for c in name.lower() if c in _SOUNDEX]
    if not letters:
        return name
    out, last = [], _SOUNDEX[letters[0]]
    for c in letters[1:]:
        code = _SOUNDEX[c]
        if code != "0" and code != last:
            out.append(code)
        if c not in "hw":
            last = code
    return (letters[0].upper() + "".join(out) + "000")[:4]
