"""Places, people and things as comparable keys.

A place is matched on the most precise thing it carries, in this order:

* a UPRN (``UPRN 100040512345``: the Unique Property Reference Number) anywhere
  in its text -> ``uprn:<digits>``;
* a full UK postcode (``TQ4 5AB``) together with a house number or flat
  number from the text -> ``pc:TQ45AB:<numbers>``; a full postcode alone names
  a street, not a flat, and is not a place;
* coordinates (``50.4353,-3.5661``) rounded to about 100 m -> ``geo:50.435,-3.566``;
* otherwise the free text, normalised (case, punctuation, common abbreviations,
  filler words) and compared fuzzily (rapidfuzz ``token_sort_ratio``) with the
  other free-text places of the same postcode district or area (blocking: two
  places in different districts are never the same place).

Not matched: a place with no text but a district or area (too coarse to be "the
same place"), town names alone, kinds of place ("bus station", "town centre",
"McDonalds", "home": many children are seen there for no reason), spelling
variants that change a house number ("14 Example Rd" and "41 Example Rd" differ
on purpose), and places described
by landmark only in different words ("the flat above the chippy" vs "12 Fore St").

People and things: vehicle registrations (current GB format, ``AB12 CDE``) and
UK phone numbers (mobile or landline, +44 or 0) found in any text are exact
keys; a person's description is reduced to a name (the words before the first
comma or bracket, without titles) and compared fuzzily with other names. A
first name or nickname alone is not matched (many adults share one).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from rapidfuzz import fuzz

#: Two normalised free-text places (same district) at or above this are one place.
PLACE_SIMILARITY = 88.0
#: Two normalised names at or above this are one person.
NAME_SIMILARITY = 90.0

_UPRN = re.compile(r"\buprn[:\s#]*([0-9]{6,12})\b", re.I)
_POSTCODE = re.compile(r"\b([A-Z]{1,2}[0-9][A-Z0-9]?)\s*([0-9][A-Z]{2})\b", re.I)
_COORDS = re.compile(r"(-?[0-9]{1,2}\.[0-9]{3,})\s*,\s*(-?[0-9]{1,3}\.[0-9]{3,})")
_NUMBER = re.compile(r"\b([0-9]{1,4}[a-z]?)\b")
_VRM = re.compile(r"\b([A-Z]{2}[0-9]{2})\s?([A-Z]{3})\b", re.I)
_PHONE = re.compile(r"(?:\+44\s?|\b0)(?:[0-9]\s?){9,10}\b")
_WORD = re.compile(r"[a-z0-9]+")

_ABBREVIATIONS = {
    "rd": "road", "st": "street", "ave": "avenue", "av": "avenue", "ln": "lane",
    "cl": "close", "ct": "court", "cres": "crescent", "dr": "drive", "pl": "place",
    "sq": "square", "ter": "terrace", "terr": "terrace", "gdns": "gardens",
    "pk": "park", "hse": "house", "apt": "flat", "apartment": "flat", "no": "",
    "nr": "near",
}
_FILLER = frozenset({"the", "a", "an", "at", "in", "on", "of", "to", "above", "number",
                     "near", "by", "and", "s"})
# Words that name a kind of place, not one place: "the bus station", "home",
# "town centre" are where many children are seen for no reason (measured as
# false alerts in bench/bench_patterns.py); a place made only of these is not matched.
_GENERIC = frozenset({
    "bus", "train", "railway", "coach", "station", "town", "city", "centre", "center",
    "park", "beach", "school", "college", "home", "placement", "care", "shop", "shops",
    "shopping", "high", "street", "road", "harbour", "seafront", "promenade", "pier",
    "cafe", "mcdonalds", "supermarket", "library", "hospital", "friends", "friend", "house",
    "playground", "skate", "field", "fields", "woods", "car", "fast", "food", "takeaway",
    "arcade", "arcades", "main", "square", "market", "precinct", "mall", "club", "leisure",
    "returned", "back", "own", "her", "his", "their", "mums", "dads", "nans",
})
_TITLES = frozenset({"mr", "mrs", "ms", "miss", "dr", "mx"})
# Descriptions that are not one identifiable person: every child has a mum.
_NOT_A_NAME = frozenset({
    "an", "a", "the", "older", "unknown", "man", "woman", "male", "female", "boy", "girl",
    "mum", "mother", "dad", "father", "nan", "gran", "grandma", "grandad", "brother",
    "sister", "aunt", "uncle", "cousin", "friend", "friends", "boyfriend", "girlfriend",
    "carer", "carers", "teacher", "staff", "someone", "somebody", "adult", "adults",
    "stepdad", "stepmum", "partner", "neighbour", "peers", "group",
})


@dataclass(frozen=True)
class PlaceKey:
    """A place's key: exact (``uprn:``, ``pc:``, ``geo:``) or fuzzy (``text:``).

    ``block`` is the postcode district or area a fuzzy key is compared within.
    """

    key: str
    block: str = ""

    @property
    def exact(self) -> bool:
        return not self.key.startswith("text:")


def normalise_text(text: str) -> str:
    """Lower case, words only, abbreviations expanded, filler words dropped."""
    words = []
    for w in _WORD.findall(text.lower().replace("'", "")):
        w = _ABBREVIATIONS.get(w, w)
        if w and w not in _FILLER:
            words.append(w)
    return " ".join(words)


def place_key(place: Mapping[str, Any] | None) -> PlaceKey | None:
    """The key of a ``safeshare.Place`` (or ``None`` if it names no particular place)."""
    if not place:
        return None
    text = place.get("place") or ""
    district = (place.get("postcode_district") or "").upper().replace(" ", "")
    area = normalise_text(place.get("area") or "")
    if m := _UPRN.search(text):
        return PlaceKey(f"uprn:{m.group(1)}")
    if m := _POSTCODE.search(text):
        postcode = (m.group(1) + m.group(2)).upper()
        rest = text[: m.start()] + text[m.end():]
        numbers = ",".join(_NUMBER.findall(rest.lower()))
        if numbers:
            return PlaceKey(f"pc:{postcode}:{numbers}")
        district = district or m.group(1).upper()
        text = rest
    if m := _COORDS.search(text):
        lat, lon = float(m.group(1)), float(m.group(2))
        if -90 <= lat <= 90 and -180 <= lon <= 180:
            return PlaceKey(f"geo:{lat:.3f},{lon:.3f}")
    words = normalise_text(text)
    if not words or words == area:
        return None  # only a town or district: not one place
    if set(words.split()) <= _GENERIC | set(area.split()):
        return None  # a kind of place ("bus station"), not one place
    # The block is the district (or area) and the house/flat numbers: a number that
    # differs is a different house, so only places in one block are compared.
    numbers = ",".join(sorted(set(_NUMBER.findall(words))))
    return PlaceKey(f"text:{words}", f"{district or area}|{numbers}")


def same_place(a: PlaceKey, b: PlaceKey) -> bool:
    """Whether two keys name one place (exact keys equal; free text close, same block)."""
    if a.exact or b.exact:
        return a.key == b.key
    if a.block and b.block and a.block != b.block:
        return False
    if a.key == b.key:
        return True
    # A number that differs is a different house, however close the words.
    if sorted(set(_NUMBER.findall(a.key))) != sorted(set(_NUMBER.findall(b.key))):
        return False
    # Words as a set: "flat 2, 14 X Road" and "14 X Road, flat 2" say the same.
    wa, wb = " ".join(sorted(set(a.key[5:].split()))), " ".join(sorted(set(b.key[5:].split())))
    return fuzz.ratio(wa, wb) >= PLACE_SIMILARITY


def things(texts: Iterable[str | None]) -> set[str]:
    """Vehicle registrations and phone numbers named in ``texts``, as exact keys."""
    out: set[str] = set()
    for text in texts:
        if not text:
            continue
        for m in _VRM.finditer(text):
            out.add(f"vrm:{(m.group(1) + m.group(2)).upper()}")
        for m in _PHONE.finditer(text):
            digits = re.sub(r"\D", "", m.group(0))
            if digits.startswith("44"):
                digits = "0" + digits[2:]
            if len(digits) == 11:
                out.add(f"tel:{digits}")
    return out


def person_name(description: str | None) -> str | None:
    """A person's name from their description: ``'Dean (about 25), drives...'`` -> ``dean``."""
    if not description:
        return None
    head = re.split(r"[,(;]| aged | about | who ", description, maxsplit=1)[0]
    words = [w for w in _WORD.findall(head.lower().replace("'", "")) if w not in _TITLES]
    words = [w for w in words if not w.isdigit()]
    if len(words) < 2 or len(words) > 4:
        # One word ("Dean") is a first name or nickname many adults share: two
        # children naming a "Dean" is not one adult. More than four is a description.
        return None
    if words[0] in _NOT_A_NAME or words[-1] in _NOT_A_NAME:
        return None
    return " ".join(words)


def same_name(a: str, b: str) -> bool:
    if a == b:
        return True
    return fuzz.token_sort_ratio(a, b) >= NAME_SIMILARITY
