"""A generated population of children and the events agencies publish about them.

For the linkage benchmark (bench/bench_identity.py) and the Splink evaluation
(bench/identity_splink.py). Deterministic for a seed. Names are drawn from a
skewed distribution (common names recur, as in life, so chance agreements
happen); each child has one to five events from police (NHS number, names, date
of birth, postcode), school (UPN, names, date of birth, postcode), health (NHS
number, names, date of birth) and the return-home service (names, often a
nickname, date of birth). Events carry the faults real records have: typos,
nicknames, day and month swapped, a move of address, missing fields; about 2%
of children are twins (same family name, date of birth and address, another
given name).
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, replace
from datetime import date, timedelta

from broker.identity.nhs import nhs_check_digit, upn_check_letter
from broker.identity.nicknames import nicknames_of

GIVEN = [
    "Olivia", "Amelia", "Isla", "Ava", "Mia", "Ivy", "Lily", "Isabella", "Rosie", "Sophia",
    "Grace", "Willow", "Freya", "Florence", "Emily", "Ella", "Poppy", "Evie", "Elsie", "Charlotte",
    "Evelyn", "Sienna", "Sofia", "Daisy", "Phoebe", "Sophie", "Alice", "Harper", "Matilda", "Ruby",
    "Emilia", "Maya", "Millie", "Isabelle", "Eva", "Luna", "Jessica", "Elizabeth", "Chloe",
    "Megan", "Katherine", "Rebecca", "Abigail", "Hannah", "Eleanor", "Victoria", "Samantha",
    "Noah", "Oliver", "George", "Arthur", "Muhammad", "Leo", "Harry", "Oscar", "Archie", "Henry",
    "Theodore", "Freddie", "Jack", "Charlie", "Theo", "Alfie", "Jacob", "Thomas", "Finley",
    "Arlo", "William", "Lucas", "Roman", "Tommy", "Isaac", "Teddy", "Alexander", "Luca", "Edward",
    "James", "Joshua", "Albie", "Elijah", "Max", "Mohammed", "Reuben", "Mason", "Daniel",
    "Benjamin", "Samuel", "Joseph", "Matthew", "Christopher", "Nicholas", "Jonathan", "Michael",
    "Robert", "Richard", "Anthony", "Jamie", "Kieran", "Tyler", "Callum", "Liam", "Ethan", "Dylan",
]
FAMILY = [
    "Smith", "Jones", "Williams", "Taylor", "Brown", "Davies", "Evans", "Wilson", "Thomas",
    "Johnson", "Roberts", "Robinson", "Thompson", "Wright", "Walker", "White", "Edwards",
    "Hughes", "Green", "Hall", "Lewis", "Harris", "Clarke", "Patel", "Jackson", "Wood", "Turner",
    "Martin", "Cooper", "Hill", "Ward", "Morris", "Moore", "Clark", "Lee", "King", "Baker",
    "Harrison", "Morgan", "Allen", "James", "Scott", "Phillips", "Watson", "Davis", "Parker",
    "Price", "Bennett", "Young", "Griffiths", "Mitchell", "Kelly", "Cook", "Carter", "Richardson",
    "Bailey", "Collins", "Bell", "Shaw", "Murphy", "Miller", "Cox", "Richards", "Khan", "Marshall",
    "Anderson", "Simpson", "Ellis", "Adams", "Singh", "Begum", "Wilkinson", "Foster", "Chapman",
    "Powell", "Webb", "Rogers", "Gray", "Mason", "Ali", "Hunt", "Hussain", "Campbell", "Matthews",
    "Owen", "Palmer", "Holmes", "Mills", "Barnes", "Knight", "Lloyd", "Butler", "Russell",
    "Barker", "Fisher", "Stevens", "Jenkins", "Murray", "Dixon", "Harvey", "Nowak", "Kowalski",
    "Okafor", "Mensah", "Ahmed", "Rahman", "Nguyen", "Costa", "Silva", "Pereira", "Fernandes",
    "Trelawny", "Penhaligon", "Tremayne", "Pascoe", "Nankervis", "Rowe", "Polglase", "Chenoweth",
]
POSTCODE_AREAS = ["TQ1", "TQ2", "TQ3", "TQ4", "TQ5", "TQ12", "TQ13", "TQ14", "EX1", "EX2", "EX4"]


@dataclass(frozen=True)
class Child:
    id: int
    given: str
    family: str
    dob: date
    nhs: str
    upn: str
    postcode: str


@dataclass(frozen=True)
class Event:
    child: int
    agency: str
    given: str | None
    family: str | None
    dob: date | None
    nhs: str | None
    upn: str | None
    postcode: str | None


def _skewed(rng: random.Random, names: list[str]) -> str:
    # Zipf-like, weight 1/(rank + 10): the first name of a list is about 4% of
    # children (England's commonest given name is about 2% of one sex's births,
    # Smith about 1.3% of people), so chance agreements are, if anything, more
    # frequent than in life.
    weights = _WEIGHTS.setdefault(len(names), [1 / (i + 10) for i in range(len(names))])
    return rng.choices(names, weights)[0]


_WEIGHTS: dict[int, list[float]] = {}


def _nhs(rng: random.Random, taken: set[str]) -> str:
    while True:
        nine = f"{rng.randrange(400_000_000, 999_999_999):09d}"
        check = nhs_check_digit(nine)
        if check is not None and nine + str(check) not in taken:
            taken.add(nine + str(check))
            return nine + str(check)


def _upn(rng: random.Random) -> str:
    la, school = rng.choice([878, 879, 880]), rng.randrange(2000, 7000)
    tail = f"{la:03d}{school:04d}{rng.randrange(10, 25):02d}{rng.randrange(1000):03d}"
    return f"{upn_check_letter(tail)}{tail}"


def _postcode(rng: random.Random) -> str:
    letters = "ABDEFGHJLNPQRSTUWXYZ"
    inward = f"{rng.randrange(1, 10)}{rng.choice(letters)}{rng.choice(letters)}"
    return f"{rng.choice(POSTCODE_AREAS)} {inward}"


def typo(rng: random.Random, s: str) -> str:
    """One keying error: a letter dropped, doubled, swapped with its neighbour or replaced."""
    if len(s) < 3:
        return s
    i = rng.randrange(1, len(s) - 1)
    kind = rng.randrange(4)
    if kind == 0:
        return s[:i] + s[i + 1:]
    if kind == 1:
        return s[:i] + s[i] + s[i:]
    if kind == 2:
        return s[:i] + s[i + 1] + s[i] + s[i + 2:]
    return s[:i] + rng.choice(string.ascii_lowercase) + s[i + 1:]


def population(n: int, *, seed: int = 13) -> tuple[list[Child], list[Event]]:
    """``n`` children (about 2% of them twins) and their events in publication order."""
    rng = random.Random(seed)
    taken: set[str] = set()
    children: list[Child] = []
    while len(children) < n:
        dob = date(2008, 1, 1) + timedelta(days=rng.randrange(365 * 10))
        child = Child(len(children), _skewed(rng, GIVEN), _skewed(rng, FAMILY), dob,
                      _nhs(rng, taken), _upn(rng), _postcode(rng))
        children.append(child)
        if rng.random() < 0.02 and len(children) < n:  # a twin: same family, birthday, home
            given = _skewed(rng, GIVEN)
            while given == child.given:
                given = rng.choice(GIVEN)
            children.append(replace(child, id=len(children), given=given,
                                    nhs=_nhs(rng, taken), upn=_upn(rng)))
    events: list[Event] = []
    for c in children:
        for _ in range(rng.choice([1, 2, 2, 3, 3, 4, 5])):
            events.append(_event(rng, c))
    rng.shuffle(events)
    return children, events


def _event(rng: random.Random, c: Child) -> Event:
    agency = rng.choice(["police", "police", "school", "school", "health", "return-home"])
    given, family, dob, postcode = c.given, c.family, c.dob, c.postcode
    nhs = c.nhs if agency in ("police", "health") and rng.random() < 0.6 else None
    upn = c.upn if agency == "school" and rng.random() < 0.7 else None
    familiar = nicknames_of(c.given)
    if familiar and (agency == "return-home" and rng.random() < 0.6 or rng.random() < 0.05):
        given = rng.choice(familiar).capitalize()
    if rng.random() < 0.06:
        given = typo(rng, given)
    if rng.random() < 0.06:
        family = typo(rng, family)
    if rng.random() < 0.03 and dob.day <= 12 and dob.day != dob.month:
        dob = date(dob.year, dob.day, dob.month)
    elif rng.random() < 0.02:
        dob = dob + timedelta(days=rng.choice([-1, 1]))
    if rng.random() < 0.12:
        postcode = _postcode(rng)  # moved, or a placement address
    # Missing fields: agencies often lack the postcode, sometimes a birth date.
    if agency == "return-home" or rng.random() < 0.15:
        postcode = None
    if rng.random() < 0.04 and nhs is None and upn is None:
        dob = None
    if rng.random() < 0.02:
        family = None
    return Event(c.id, agency, given, family, dob, nhs, upn, postcode)
