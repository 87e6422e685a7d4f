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


def nicknames_of(given: str) -> list[str]:
    """Familiar forms of a formal name, lower case, sorted (for test data)."""
    return sorted(_namer().nicknames_of(given.lower()))


def same_name(a: str, b: str) -> bool:
    """True if one given name is a familiar form of the other, or both are of one name."""
    fa, fb = forms(a), forms(b)
    return not fa.isdisjoint(fb)
