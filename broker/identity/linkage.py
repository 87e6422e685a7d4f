"""Record linkage for events without the NHS number: a Fellegi-Sunter model.

The model (the m and u probability of each comparison level, and the prior
that two records are the same child) is trained by Splink on a generated
population (bench/identity_splink.py writes ``linkage_model.json``); the
router applies it in-process, because Splink's own incremental matching runs a
DuckDB query per new record, far slower than the router's 20 ms budget (see
docs/IDENTITY.md for the figures). The comparison levels
(broker/identity/comparisons.py) are Splink's ``NameComparison``,
``DateOfBirthComparison`` and ``PostcodeComparison``, computed with rapidfuzz
(Jaro-Winkler, Levenshtein) so the trained weights mean what Splink meant by them.

An event is compared with a known *child*: each comparison at its closest
level over the child's records (its postcode may be on another record than
its exact birth date). The given name is one comparison, its spelling and its
formal form (a familiar form, Jim for James, is a level of it, and so is one
keying error of it or of a formal form, Tqeo for Theo, and one of a familiar
form, Ammy for Amelia's Amy), so an exact
name is not counted twice nor a typo or nickname against. The birth date has
two keying errors as levels of their own, day and month swapped and one day
apart (by chance ten times rarer between two children than any one digit off).
The m and u of every level are Splink's, trained on a generated population of
another seed than the bench's (labelled m, u by random sampling).

Rules sit above the score, because no weight should outvote them: two
different NHS numbers are two children, and a given name that disagrees
(not the same, not within Jaro-Winkler 0.92 or one keying error of it or of
one of its familiar forms, not a familiar form: twins, as Oliver and Olivia;
nor two names each given to many children in their own right, Elsie and Alice,
Sophie and Sophia; nor two real names a letter apart, Millie and Willie; a
short name one keying error away counts as the same only when no other name
in use is as near: Aa for Ava, not Ea, Eva's or Ava's, nor Mxa, Mia's or
Max's) is never linked automatically, only offered for review (a child that
agrees may still be linked when such a twin scores higher: the rule keeps the
link from the twin); nor is a child known under another name of its own than
the event's (Elizabeth for Alice, whatever familiar form they share), nor one
of two children the event fits whose names tell them apart (Issy: Isabella
and Isabelle); nor, with the family name, a birth date a day apart and a home
not known to differ, a name of its own that is a familiar form of another
(Millie: Amelia's twin may be recorded as Millie); nor is an event without the
given name, or without the family name or birth date unless the postcode
agrees, the given name is one the twins rule allows and nothing else differs
by more than a keying error (a first name and a birthday alone fit too many
children), or, without the family name, the exact birth date and the same
name or a familiar form score at least 0.95 and no other child the event fits
is known under another family name (the name it lacks is what would tell
them apart).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from typing import Any, Final

from broker.identity.comparisons import (
    dob_level,
    family_level,
    given_level,
    name_level,
    postcode_level,
    soundex,
    typo_level,
)
from broker.identity.given_names import GivenNames, Tally
from broker.identity.nicknames import forms

__all__ = [
    "LINK", "NEW", "REVIEW", "THIN_LINK", "Features", "Index", "Match", "Model", "Thresholds",
    "best_levels", "dob_level", "family_level", "given_level", "levels_of", "name_level",
    "postcode_level", "probability", "soundex", "thin", "typo_level",
]
LINK: Final = "LINK"
NEW: Final = "NEW"
REVIEW: Final = "REVIEW"


@dataclass(frozen=True)
class Features:
    """What matching needs of one record, normalised (lower-case names, bare postcode)."""

    given: str | None = None
    family: str | None = None
    dob: str | None = None  # ISO date
    postcode: str | None = None
    nhs: str | None = None
    upn: str | None = None

    @classmethod
    def of(
        cls,
        *,
        given: str | None = None,
        family: str | None = None,
        dob: date | str | None = None,
        postcode: str | None = None,
        nhs: str | None = None,
        upn: str | None = None,
    ) -> Features:
        return cls(
            given=_name(given),
            family=_name(family),
            dob=dob.isoformat() if isinstance(dob, date) else dob or None,
            postcode="".join(postcode.split()).upper() if postcode else None,
            nhs=nhs or None,
            upn=upn or None,
        )

    @classmethod
    def of_subject(cls, subject: Mapping[str, Any]) -> Features:
        """The features of an event's ``subject`` record."""
        return cls.of(
            given=subject.get("given_name"),
            family=subject.get("family_name"),
            dob=subject.get("date_of_birth"),
            postcode=subject.get("postcode"),
            nhs=subject.get("nhs_number"),
            upn=subject.get("upn"),
        )

    def to_json(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}

    @classmethod
    def from_json(cls, obj: Mapping[str, str]) -> Features:
        return cls(**{k: obj.get(k) for k in cls.__dataclass_fields__})


def _name(value: str | None) -> str | None:
    if not value:
        return None
    text = " ".join(value.lower().replace("-", " ").split())
    return text or None


COMPARISONS: Final = (
    ("given", given_level, "given"),
    ("family", family_level, "family"),
    ("dob", dob_level, "dob"),
    ("postcode", postcode_level, "postcode"),
)


# -- the model ----------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """Match weights (log2 m/u) per comparison level, and the prior weight."""

    prior_weight: float
    weights: Mapping[str, tuple[float, ...]]
    #: m and average u of each comparison's exact level, for term frequencies.
    exact_mu: Mapping[str, tuple[float, float]] = field(default_factory=dict)

    @classmethod
    def from_splink(cls, model: Mapping[str, Any]) -> Model:
        """From a Splink model (``linker.misc.save_model_to_json()``), levels in order."""
        lam = float(model["probability_two_random_records_match"])
        weights: dict[str, tuple[float, ...]] = {}
        exact_mu: dict[str, tuple[float, float]] = {}
        for comparison in model["comparisons"]:
            levels = [lv for lv in comparison["comparison_levels"] if not lv.get("is_null_level")]
            exact_mu[comparison["output_column_name"]] = (
                max(float(levels[0].get("m_probability") or 1e-6), 1e-6),
                max(float(levels[0].get("u_probability") or 1e-6), 1e-6),
            )
            weights[comparison["output_column_name"]] = tuple(
                math.log2(max(float(lv.get("m_probability") or 1e-6), 1e-6)
                          / max(float(lv.get("u_probability") or 1e-6), 1e-6))
                for lv in levels
            )
        return cls(prior_weight=math.log2(lam / (1 - lam)), weights=weights, exact_mu=exact_mu)

    @classmethod
    def default(cls) -> Model:
        """The model trained by bench/identity_splink.py, shipped with the package."""
        text = resources.files("broker.identity").joinpath("linkage_model.json").read_text()
        return cls.from_splink(json.loads(text))

    def weight(
        self, a: Features, b: Features, tf: Callable[[str, str], float | None] | None = None
    ) -> tuple[float, bool]:
        """Total match weight of two records, and whether a person must decide (the
        given names disagree, or either lacks a name or the date of birth, unless
        the postcode agrees or the comparison is :func:`thin`, on which
        ``Index.match`` sets a bar of its own).

        ``tf(attribute, value)``: the share of records with that value, where
        known. An exact agreement of names is then weighed by how common the
        name is (Splink's term-frequency adjustment: u of the value instead of
        the average u): Olivia Smith agreeing says less than Nankervis.
        """
        return self.weigh(levels_of(a, b), a, tf)

    def weigh(
        self,
        levels: Mapping[str, int | None],
        a: Features,
        tf: Callable[[str, str], float | None] | None = None,
    ) -> tuple[float, bool]:
        """:meth:`weight` of comparison levels already found (``a``: the new record)."""
        total = self.prior_weight
        disagree = False
        for name, level in levels.items():
            if level is None or name in (_TYPO, _OWN, _AMBIGUOUS):
                continue
            attr = _ATTR[name]
            total += self.weights[name][level]
            if level == 0 and tf is not None and name in _TF:
                u_value = tf(attr, getattr(a, attr))
                if u_value is not None:
                    m, u = self.exact_mu[name]
                    total += math.log2(u / max(u_value, _TF_FLOOR))
        given = levels["given"]
        if given is not None and given > 2 and levels.get(_TYPO) != 0:
            disagree = True  # not the same name, a close spelling or a familiar form
        if levels.get(_OWN) == 1:
            disagree = True  # two names of their own (Elsie and Alice): maybe twins
        if (
            levels["given"] == 0
            and levels.get(_AMBIGUOUS) == 1
            and levels["dob"] == 2
            and (levels["family"] or 0) <= _KEYING_ERROR["family"]
            and levels["postcode"] in (0, None)
        ):
            # Millie is a name of her own and a familiar form of Amelia's and
            # Emily's: with the family name, a birth date a day apart (twins born
            # either side of midnight, or a slip) and a home not known to differ,
            # the record may be her twin Amelia's, recorded as "Millie".
            disagree = True
        if levels["given"] is None:
            disagree = True  # a family name and a birthday alone fit too many children
        elif (levels["family"] is None or levels["dob"] is None) and not (
            levels["postcode"] == 0
            and (levels["family"] or 0) <= _KEYING_ERROR["family"]
            and (levels["dob"] or 0) <= _KEYING_ERROR["dob"]
        ) and not thin(levels):
            # Too little to be sure: without the family name or the birth date,
            # only the same address, a name the twins rule allows and no other
            # difference than a keying error will do; or, without the family
            # name, the exact birth date, the name and the bar Index.match sets.
            disagree = True
        return total, disagree


_ATTR: Final = {name: attr for name, _, attr in COMPARISONS}
#: The last level of each comparison that is at most a keying error away.
_KEYING_ERROR: Final = {"family": 2, "dob": 3}
_TYPO: Final = "given_typo"
#: Not weighed either: 1 if two given names are each a name of its own (below).
_OWN: Final = "given_own"
#: Not weighed: 1 if the new record's given name is a name of its own and a
#: familiar form of another name of its own (Millie: Amelia, Emily), see
#: :meth:`GivenNames.ambiguous`.
_AMBIGUOUS: Final = "given_ambiguous"
#: A record a link below this brought is tentative (:meth:`Index.add`).
_TRUSTED: Final = 0.99
#: The least probability of a link without the family name or the postcode
#: (:func:`thin`), whatever the policy's ``link_above`` below it.
THIN_LINK: Final = 0.95


def thin(levels: Mapping[str, int | None]) -> bool:
    """True if an event and a child are compared on little more than the given name
    and birth date: one side lacks the family name, neither the postcode, the
    birth dates are the same and the given names the same, close or a familiar
    form (Ellie for Eleanor).

    Such a link is allowed, but only at :data:`THIN_LINK` and when the event
    fits no child known under another family name (``Index.match``): agencies
    often leave the family name out (the return-home service knows a child by
    first name), and an uncommon first name with an exact birthday is rarely
    another child's; a common one scores below the bar by its frequency."""
    given = levels["given"]
    return (levels["family"] is None and levels["dob"] == 0 and levels["postcode"] is None
            and given is not None and given <= 2)


def levels_of(a: Features, b: Features) -> dict[str, int | None]:
    """The comparison level of each comparison of two records (None: a side lacks it)."""
    out = {name: level_of(getattr(a, attr), getattr(b, attr))
           for name, level_of, attr in COMPARISONS}
    out[_TYPO] = typo_level(a.given, b.given)
    return out


def best_levels(per_record: Iterable[Mapping[str, int | None]]) -> dict[str, int | None]:
    """A child's closest level of each comparison over its records (the child, not one
    record, is what an event is matched to: its postcode may be on another record)."""
    out: dict[str, int | None] = {}
    for levels in per_record:
        for name, level in levels.items():
            known = out.get(name)
            if level is not None and (known is None or level < known):
                out[name] = level
            else:
                out.setdefault(name, None)
    return out


#: Comparisons whose exact level is weighed by term frequency, and the least
#: frequency used (a name seen once in a small index is not infinitely rare).
_TF: Final = frozenset({"given", "family"})
_TF_FLOOR: Final = 1e-4


def probability(weight: float) -> float:
    return float(1.0 / (1.0 + math.pow(2.0, -weight)))


@dataclass(frozen=True)
class Thresholds:
    """Match probabilities: at or above ``upper`` link, below ``lower`` a new child."""

    upper: float = 0.9
    lower: float = 0.5


@dataclass(frozen=True)
class Match:
    """A linkage decision: LINK to ``pseudonym``, NEW child, or REVIEW (``pseudonym`` is
    the best candidate, to be confirmed by a person)."""

    decision: str
    pseudonym: str | None
    probability: float


@dataclass
class Index:
    """The children known so far, each as the features of the records seen for it.

    Blocking keys (date of birth, the same with day and month swapped, formal
    given name and family name with the birth year, and without it where either
    side has no birth date, the family name's Soundex code with the birth year
    and an initial of the given name's forms, postcode and initial) limit
    comparisons to a few candidates per event.
    """

    model: Model
    thresholds: Thresholds = field(default_factory=Thresholds)
    by_nhs: dict[str, str] = field(default_factory=dict)
    by_upn: dict[str, str] = field(default_factory=dict)
    records: dict[str, list[Features]] = field(default_factory=dict)
    #: What each child's pseudonym was derived from, ``(kind, value)``: kept so
    #: that a key rotation can map old pseudonyms (PartnershipKeys.rotation_map).
    anchors: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: Children a person linked into another (broker/identity/decisions.py):
    #: survivor -> {merged pseudonym: (its records, its anchor)}, for an unlink.
    merged: dict[str, dict[str, tuple[list[Features], tuple[str, str] | None]]] = field(
        default_factory=dict
    )
    #: Survivor -> shares made under the merged identity since the link.
    shares: dict[str, list[str]] = field(default_factory=dict)
    #: Child -> {subscriber: whether its copies showed the pseudonym}: who holds
    #: records under it, to be told of a link or unlink (broker/routing/identity_notices.py).
    recipients: dict[str, dict[str, bool]] = field(default_factory=dict)
    #: Survivor -> {merged pseudonym: the recipients told of that link}, for an unlink.
    told: dict[str, dict[str, dict[str, bool]]] = field(default_factory=dict)
    _counts: dict[str, Tally] = field(
        default_factory=lambda: {"given": Tally(), "family": Tally()}
    )
    _blocks: dict[tuple[str, ...], set[str]] = field(default_factory=dict)
    #: Records a link below 0.99 brought (pseudonym, features): not evidence for
    #: another automatic link (kept when a record is removed, for an undo).
    tentative: set[tuple[str, Features]] = field(default_factory=set)
    #: The twins rule's knowledge of given names, from the index's own counts.
    names: GivenNames = field(init=False)

    def __post_init__(self) -> None:
        self.names = GivenNames(self._counts["given"])

    def add(self, pseudonym: str, f: Features, probability: float | None = None) -> bool:
        """Record that ``f`` is a record of the child ``pseudonym``; False if it was already.

        ``probability``: how sure the link that brought it was (below 0.99 the
        record is tentative, see :meth:`match`); None keeps what the index knew
        (a record put back after an undo)."""
        known = self.records.setdefault(pseudonym, [])
        if f in known:
            return False
        known.append(f)
        if probability is not None:
            if probability < _TRUSTED:
                self.tentative.add((pseudonym, f))
            else:
                self.tentative.discard((pseudonym, f))
        for attr, counts in self._counts.items():
            value = getattr(f, attr)
            if value is not None:
                counts[value] += 1
        if f.nhs:
            self.by_nhs.setdefault(f.nhs, pseudonym)
        if f.upn:
            self.by_upn.setdefault(f.upn, pseudonym)
        for key in _keys(f):
            self._blocks.setdefault(key, set()).add(pseudonym)
        return True

    def remove(self, pseudonym: str) -> list[Features]:
        """Forget a child (an unlink re-adds its records under their own pseudonyms)."""
        self.anchors.pop(pseudonym, None)
        gone = self.records.pop(pseudonym, [])
        for f in gone:
            for attr, counts in self._counts.items():
                value = getattr(f, attr)
                if value is not None:
                    counts[value] -= 1
            for key in _keys(f):
                self._blocks.get(key, set()).discard(pseudonym)
            if f.nhs and self.by_nhs.get(f.nhs) == pseudonym:
                del self.by_nhs[f.nhs]
            if f.upn and self.by_upn.get(f.upn) == pseudonym:
                del self.by_upn[f.upn]
        return gone

    def tentative_of(self, pseudonym: str) -> list[int]:
        """Positions of the child's tentative records in ``records[pseudonym]``."""
        return [i for i, f in enumerate(self.records.get(pseudonym, ()))
                if (pseudonym, f) in self.tentative]

    def _tf(self, attr: str, value: str) -> float | None:
        """Share of indexed records with this value (None until 1,000 are indexed)."""
        counts = self._counts[attr]
        total = counts.sum
        if total < 1000:
            return None
        return counts[value] / total

    def _apart(self, a: str, b: str) -> bool:
        """True if the names two children are known by tell them apart."""
        return self.names.apart((r.given for r in self.records[a]),
                                (r.given for r in self.records[b]))

    def _families_apart(self, a: str, b: str) -> bool:
        """True unless two children are known under family names at most a keying error
        apart (one child recorded twice under one family name is not told apart by
        it; a child known without one may be anyone's)."""
        fa = {r.family for r in self.records[a] if r.family}
        fb = {r.family for r in self.records[b] if r.family}
        return not any((family_level(x, y) or 0) <= _KEYING_ERROR["family"]
                       for x in fa for y in fb)

    def candidates(self, f: Features) -> set[str]:
        out: set[str] = set()
        for key in _keys(f, probe=True):
            out |= self._blocks.get(key, set())
        return out

    def match(self, f: Features) -> Match:
        """Which child ``f`` belongs to, as far as the identifiers and the model say."""
        if f.nhs and f.nhs in self.by_nhs:
            return Match(LINK, self.by_nhs[f.nhs], 1.0)
        if f.upn and f.upn in self.by_upn:
            return Match(LINK, self.by_upn[f.upn], 1.0)
        best: tuple[float, str, bool] | None = None
        names = self.names
        ambiguous = int(names.ambiguous(f.given))
        agreeing: tuple[float, str] | None = None  # the best child the rules allow
        fitting: list[tuple[float, str]] = []  # every child the rules allow
        thinly = False  # the agreeing child fits on given name and birth date alone
        for pseudonym in self.candidates(f):
            per_record: list[dict[str, int | None]] = []
            trusted: list[dict[str, int | None]] = []
            another = False  # a record names the child otherwise (Elizabeth for Alice)
            for other in self.records[pseudonym]:
                if f.nhs and other.nhs and f.nhs != other.nhs:
                    per_record = []
                    break  # two NHS numbers: two children
                if f.upn and other.upn and f.upn != other.upn:
                    continue  # another pupil's record
                levels = levels_of(f, other)
                if levels["given"] in (3, 4) and names.two_names(f.given, other.given):
                    levels["given"] = given_level(f.given, other.given, keying=False)
                    levels[_TYPO] = 1  # Millie is not Willie mistyped
                levels[_OWN] = names.of_their_own(
                    f.given, other.given, levels["given"], same_home=levels["postcode"] == 0,
                    typo=levels[_TYPO])
                if levels[_TYPO] == 1 and (
                        names.unmistakable_typo(f.given, other.given)
                        or names.one_name_mistyped(f.given, other.given)
                        or levels["given"] == 4
                        and names.unmistakable_familiar_typo(f.given, other.given)):
                    levels[_TYPO] = 0
                per_record.append(levels)
                if (pseudonym, other) not in self.tentative:
                    trusted.append(levels)
                    another = another or names.another_name(f.given, other.given)
            if not per_record:
                continue
            levels = _with(best_levels(per_record), ambiguous)
            w, disagree = self.model.weigh(levels, f, self._tf)
            if best is None or w > best[0]:
                best = (w, pseudonym, disagree)
            if len(trusted) < len(per_record):
                if not trusted:
                    continue
                levels = _with(best_levels(trusted), ambiguous)
                w, disagree = self.model.weigh(levels, f, self._tf)
            if disagree or another:
                continue
            fitting.append((w, pseudonym))
            if agreeing is None or w > agreeing[0]:
                agreeing = (w, pseudonym)
                thinly = thin(levels)
        if best is None:
            return Match(NEW, None, 0.0)
        if agreeing is not None and probability(agreeing[0]) >= self.thresholds.upper:
            # Scored on the child's records that are not tentative: a record a
            # less certain link brought may be another child's, and would carry
            # that child's later events along with it (one wrong link, several).
            # A twin scoring higher (the same home, another name) is not this child:
            # the rule keeps the link from the twin, not from the child that agrees.
            likely = [p for w, p in fitting if probability(w) >= self.thresholds.lower]
            if any(self._apart(a, b) for i, a in enumerate(likely) for b in likely[i + 1:]):
                # It fits two children whose names tell them apart (Issy: Isabella
                # and Isabelle; Eve: Evie, and Evelyn): which one is for a person.
                return Match(REVIEW, agreeing[1], probability(agreeing[0]))
            if thinly and (
                probability(agreeing[0]) < max(self.thresholds.upper, THIN_LINK)
                or any(self._families_apart(agreeing[1], p) for p in likely if p != agreeing[1])
            ):
                # Without the family name: a stricter bar, and never when another
                # child it fits has another family name (Luna Williams, Luna Patel).
                return Match(REVIEW, agreeing[1], probability(agreeing[0]))
            return Match(LINK, agreeing[1], probability(agreeing[0]))
        p = probability(best[0])
        if p >= self.thresholds.lower:
            return Match(REVIEW, best[1], p)
        return Match(NEW, None, p)


def _with(levels: dict[str, int | None], ambiguous: int) -> dict[str, int | None]:
    levels[_AMBIGUOUS] = ambiguous
    return levels


def _keys(f: Features, *, probe: bool = False) -> Iterable[tuple[str, ...]]:
    if f.dob:
        yield ("dob", f.dob)
        y, m, d = f.dob.split("-")
        if probe and int(d) <= 12:
            yield ("dob", f"{y}-{d}-{m}")
    year = f.dob[:4] if f.dob else None
    if f.given and f.family:
        for formal in sorted(forms(f.given)):
            if year is not None:
                yield ("given-family-year", formal, f.family, year)
            # An event without a birth date is compared with every record of
            # the names, an event with one also with those that have none.
            if not probe or year is None:
                yield ("given-family", formal, f.family)
            if probe or year is None:
                yield ("given-family-undated", formal, f.family)
    if f.family and year is not None:
        # The family name as it sounds, the birth year and the given name's
        # initial: a typo in the family name and a birth date a day off.
        sound = soundex(f.family)
        for initial in sorted({name[0] for name in forms(f.given)} if f.given else {""}):
            yield ("sound-year-initial", sound, year, initial)
    if f.postcode and f.given:
        yield ("postcode-initial", f.postcode, f.given[0])
