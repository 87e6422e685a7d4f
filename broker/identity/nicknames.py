"""Given names and their familiar forms (Jess for Jessica, Kate for Katherine).

From the ``nicknames`` package (a maintained, hand-curated data set of English
names and nicknames, Apache-2.0) rather than a table of our own. A name's
*forms* are the name and every formal name it is a nickname of; two given names
may be the same child's when their forms meet.
"""

from __future__ import annotations

from functools import lru_cache

from nicknames import NickNamer


@lru_cache(maxsize=1)
def _namer() -> NickNamer:
    return NickNamer()  # reads the data set: once, on first use


@lru_cache(maxsize=65536)
def forms(given: str) -> frozenset[str]:
    """``given`` (lower case) and the formal names it is a familiar form of."""
    name = given.lower()
    return frozenset({name, *_namer().canonicals_of(name)})


@lru_cache(maxsize=65536)
def formal_forms(given: str) -> frozenset[str]:
    """``given`` and the names it is a familiar form of that are at least as long
    (Jamie: James; Ollie: Olivia; not Charlotte: "Chick", a row of the data set
    the wrong way round): what a keying error of a form is measured against."""
    name = given.lower()
    return frozenset(f for f in forms(name) if len(f) >= len(name))


@lru_cache(maxsize=65536)
def familiar_forms(given: str) -> frozenset[str]:
    """The familiar forms of ``given`` and of the formal forms it is a form of (Amy,
    Millie, Mel for Amelia; Fifi for Phoebe): what a keying error of a familiar
    form is measured against."""
    return frozenset(n for f in formal_forms(given) for n in _namer().nicknames_of(f))


@lru_cache(maxsize=65536)
def listed(given: str) -> bool:
    """True if the data set knows ``given`` as a name or a familiar form of one (Max,
    Willie; not a keying error such as Mxa)."""
    name = given.lower()
    return bool(_namer().canonicals_of(name) or _namer().nicknames_of(name))


def nicknames_of(given: str) -> list[str]:
    """Familiar forms of a formal name, lower case, sorted (for test data)."""
    return sorted(_namer().nicknames_of(given.lower()))


@lru_cache(maxsize=65536)
def same_name(a: str, b: str) -> bool:
    """True if one given name is a familiar form of the other (Jim, James), or both
    are familiar forms of one name at least as long as each (Jim, Jimmy: James).

    The data set also lists some pairs the other way round (Charlotte as a
    nickname of Chick, Robert of Bill): a familiar form shortens a name or keeps
    its length, so two names that meet only at a shorter one (Chuck and
    Charlotte at Chick, Robert and William at Bill) are not one name."""
    a, b = a.lower(), b.lower()
    fa, fb = forms(a), forms(b)
    if a in fb or b in fa:
        return True
    return any(len(c) >= max(len(a), len(b)) for c in fa & fb)
