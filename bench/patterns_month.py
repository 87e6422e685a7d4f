"""A generated month of a partnership's events with planted patterns, for bench_patterns.

Noise: most children go missing once or twice; each is found at a place of
its own (a house on one of a few hundred streets, so streets repeat and
house numbers collide), last seen at a kind of place ("bus station", "town
centre"), and about a third have a return-home interview naming a place and
sometimes an adult by first name only. Place text carries the noise real
records do: abbreviations, case, a postcode or not, typos.

Every child found has a return-home interview within 72 hours (most the next
day; two thirds of them name nothing). A child's risk level is mostly the same
from event to event (5 % move one level either way).

Planted: children missing three to five times within the detector's window;
places three to five children are found at or name within 28 days (each
spelled its own way); adults (a full name, a vehicle registration or a phone)
named about two or three children; children whose interview never came or came
late (all in one other local authority, which makes the area's pattern too);
children whose risk level rose LOW -> MEDIUM -> HIGH (-> CRITICAL).
"""

from __future__ import annotations

import random
import string
import uuid
from dataclasses import dataclass, field
from typing import Any

DAY_MS = 86_400_000
STREET_WORDS = ["Harbour", "Fore", "Station", "Church", "Victoria", "Market", "Mill", "Park",
                "Belgrave", "Torwood", "Babbacombe", "Abbey", "Palace", "Union", "Higher",
                "Lower", "Winner", "Hyde", "Dartmouth", "Totnes", "Colley", "Ellacombe",
                "Warberry", "Ilsham", "Cary", "Shiphay", "Barton", "Chelston", "Preston",
                "Goodrington", "Roundham", "Polsham", "Cockington", "Oldway", "Marldon"]
STREET_KINDS = ["Road", "Street", "Lane", "Avenue", "Close", "Terrace", "Crescent", "Drive"]
ABBR = {"Road": "Rd", "Street": "St", "Lane": "Ln", "Avenue": "Ave", "Close": "Cl",
        "Terrace": "Terr", "Crescent": "Cres", "Drive": "Dr"}
GENERIC = ["bus station", "town centre", "the seafront", "McDonalds", "the harbour",
           "train station", "friend's house", "the park"]
FIRST = ["Dean", "Jay", "Kyle", "Liam", "Ryan", "Connor", "Jordan", "Tyler", "Kai", "Reece"]
SURNAMES = ["Smith", "Jones", "Taylor", "Brown", "Williams", "Wilson", "Johnson", "Davies",
            "Evans", "Thomas", "Roberts", "Walker", "Wright", "Thompson", "White", "Hughes"]
DISTRICTS = ["TQ1", "TQ2", "TQ3", "TQ4", "TQ5", "TQ12", "TQ14", "EX7"]
LEVELS = ["LOW", "MEDIUM", "HIGH", "CRITICAL"]
HOUR_MS = 3_600_000
TORBAY, DEVON = "E06000027", "E10000008"


@dataclass
class Month:
    events: list[dict[str, Any]] = field(default_factory=list)
    # planted pattern -> (kind, the children it joins, the event ids that make it)
    planted: list[tuple[str, frozenset[str], frozenset[str]]] = field(default_factory=list)


def _typo(rng: random.Random, text: str) -> str:
    if len(text) < 6 or rng.random() < 0.6:
        return text
    i = rng.randrange(2, len(text) - 2)
    if text[i].isalpha() and text[i + 1].isalpha():
        return text[:i] + text[i + 1] + text[i] + text[i + 2:]
    return text


def _spell(rng: random.Random, flat: int | None, number: int, street: str, kind: str) -> str:
    kind = ABBR[kind] if rng.random() < 0.4 else kind
    where = f"{number} {_typo(rng, street)} {kind}"
    if flat is not None:
        where = (f"Flat {flat}, {where}" if rng.random() < 0.6 else f"{where}, flat {flat}")
    return where.lower() if rng.random() < 0.2 else where


class Generator:
    def __init__(self, seed: int, start_ms: int) -> None:
        self.rng = random.Random(seed)
        self.start = start_ms
        # A partnership's streets: about 9,000, each up to 200 houses.
        self.streets = [(f"{a} {b}" if a != b else a, k, self.rng.choice(DISTRICTS))
                        for a in STREET_WORDS for b in STREET_WORDS for k in STREET_KINDS]
        self.level: dict[str, int] = {}  # each child's usual risk level
        self.area: dict[str, str] = {}  # children outside Torbay

    def _risk(self, child: str) -> str:
        base = self.level.setdefault(child, self.rng.choices([0, 1, 2], [5, 4, 1])[0])
        if self.rng.random() < 0.05:
            base = min(3, max(0, base + self.rng.choice([-1, 1])))
        return LEVELS[base]

    def _at(self, lo_day: float = 0, hi_day: float = 30) -> int:
        return self.start + int(self.rng.uniform(lo_day, hi_day) * DAY_MS)

    def _event(self, child: str, at: int, payload: tuple[str, dict[str, Any]]) -> dict[str, Any]:
        category = ("MISSING_EPISODE" if payload[0].endswith("MissingEpisode")
                    else "RETURN_HOME_INTERVIEW")
        return {"event_id": str(uuid.UUID(int=self.rng.getrandbits(128))), "occurred_at": at,
                "subject": {"pseudonym": child,
                            "local_authority": self.area.get(child, TORBAY)},
                "category": category, "risk_level": self._risk(child), "summary": None,
                "payload": payload}

    def _house(self) -> dict[str, Any]:
        if self.rng.random() < 0.6:  # most are found at home or back at their placement
            return {"place": self.rng.choice(["home", "returned to placement", "at home"]),
                    "area": None, "postcode_district": None}
        street, kind, district = self.rng.choice(self.streets)
        flat = self.rng.randint(1, 6) if self.rng.random() < 0.3 else None
        return {"place": _spell(self.rng, flat, self.rng.randint(1, 200), street, kind),
                "area": None, "postcode_district": district}

    def missing(self, child: str, at: int, found: dict[str, Any] | None = None) -> dict[str, Any]:
        payload = {"episode_type": "MISSING",
                   "last_seen": {"place": self.rng.choice(GENERIC), "area": "Torquay",
                                 "postcode_district": "TQ1"},
                   "found": found or self._house()}
        return self._event(child, at, ("safeshare.MissingEpisode", payload))

    def concern(self, child: str, at: int, level: str) -> dict[str, Any]:
        """A concern with no payload of its own (an exploitation concern, say)."""
        return {"event_id": str(uuid.UUID(int=self.rng.getrandbits(128))), "occurred_at": at,
                "subject": {"pseudonym": child, "local_authority": self.area.get(child, TORBAY)},
                "category": "EXPLOITATION", "risk_level": level,
                "summary": "Concern of exploitation.", "payload": None}

    def interview(self, child: str, at: int, places: list[dict[str, Any]],
                  people: list[str]) -> dict[str, Any]:
        payload = {"held_at": at, "places_mentioned": places,
                   "people_mentioned": [{"description": p, "relationship": None} for p in people],
                   "disclosures": None}
        return self._event(child, at, ("safeshare.ReturnHomeInterview", payload))


def month(events: int, seed: int = 15, start_ms: int = 1_780_000_000_000) -> Month:
    """At least ``events`` events over 30 days, about 2 % of them planted patterns."""
    g = Generator(seed, start_ms)
    rng = g.rng
    m = Month()
    n_planted = max(10, events // 1000)
    for i in range(n_planted):  # repeat missing
        child = f"rep-{i}"
        base = rng.uniform(0, 5)
        ids = []
        for _ in range(rng.randint(3, 5)):
            e = g.missing(child, g._at(base, base + 25))
            m.events.append(e)
            ids.append(e["event_id"])
        m.planted.append(("REPEAT_MISSING", frozenset([child]), frozenset(ids)))
    for i in range(n_planted):  # shared places
        street, kind, district = rng.choice(g.streets)
        number, flat = rng.randint(1, 200), rng.randint(1, 4)
        base = rng.uniform(0, 8)
        children, ids = [], []
        for c in range(rng.randint(3, 5)):
            child = f"place-{i}-{c}"
            place = {"place": _spell(rng, flat, number, street, kind), "area": None,
                     "postcode_district": district}
            at = g._at(base, base + 20)
            e = (g.missing(child, at, found=place) if rng.random() < 0.6
                 else g.interview(child, at, [place], []))
            m.events.append(e)
            children.append(child)
            ids.append(e["event_id"])
        m.planted.append(("SHARED_PLACE", frozenset(children), frozenset(ids)))
    for i in range(n_planted):  # shared adults, cars, phones
        what = rng.choice(["name", "vrm", "tel"])
        if what == "name":
            thing = f"{rng.choice(FIRST)} {rng.choice(SURNAMES)}{i}"
        elif what == "vrm":
            thing = ("".join(rng.choices(string.ascii_uppercase, k=2)) + f"{rng.randint(10, 99)} "
                     + "".join(rng.choices(string.ascii_uppercase, k=3)))
        else:
            thing = f"07700 9{i:05d}"
        children, ids = [], []
        for c in range(rng.randint(2, 3)):
            child = f"adult-{i}-{c}"
            desc = thing if what == "name" else f"older man, drives {thing}" if what == "vrm" \
                else f"texts her on {thing}"
            e = g.interview(child, g._at(), [], [desc])
            m.events.append(e)
            children.append(child)
            ids.append(e["event_id"])
        m.planted.append(("SHARED_PERSON", frozenset(children), frozenset(ids)))
    c = 0
    while len(m.events) < events:  # noise
        child = f"child-{c}"
        c += 1
        for _ in range(1 if rng.random() < 0.8 else 2):
            at = g._at()
            m.events.append(g.missing(child, at))
            if rng.random() < 0.35:
                people = [rng.choice(FIRST)] if rng.random() < 0.5 else []
                m.events.append(g.interview(child, at + DAY_MS, [g._house()], people))
    for i in range(n_planted):  # overdue return-home interviews (one area)
        child = f"overdue-{i}"
        g.area[child] = DEVON
        e = g.missing(child, g._at(0, 24))
        m.events.append(e)
        if rng.random() < 0.5:  # late rather than never
            m.events.append(g.interview(child, e["occurred_at"] + rng.randint(80, 140) * HOUR_MS,
                                        [], []))
        m.planted.append(("OVERDUE_INTERVIEW", frozenset([child]), frozenset([e["event_id"]])))
    m.planted.append(("OVERDUE_AREA", frozenset(f"overdue-{i}" for i in range(n_planted)),
                      frozenset()))
    for i in range(n_planted):  # rising risk: missing once, then concerns rising
        child = f"rising-{i}"
        at = g._at(0, 10)
        g.level[child] = 0
        e = {**g.missing(child, at), "risk_level": "LOW"}
        m.events += [e, {**g.interview(child, at + rng.randint(2, 48) * HOUR_MS, [], []),
                         "risk_level": "LOW"}]
        ids = [e["event_id"]]
        for level in LEVELS[1: rng.randint(3, 4)]:
            at += rng.randint(3, 7) * DAY_MS  # after the interview
            e = g.concern(child, at, level)
            m.events.append(e)
            ids.append(e["event_id"])
        m.planted.append(("RISING_RISK", frozenset([child]), frozenset(ids)))
    held: dict[str, list[int]] = {}
    for e in m.events:
        if e["category"] == "RETURN_HOME_INTERVIEW":
            held.setdefault(e["subject"]["pseudonym"], []).append(e["occurred_at"])
    for e in list(m.events):  # every other return gets its interview within 72 hours
        child, at = e["subject"]["pseudonym"], e["occurred_at"]
        if e["category"] == "MISSING_EPISODE" and \
                not child.startswith(("overdue-", "rising-")) and \
                not any(at <= t <= at + 72 * HOUR_MS for t in held.get(child, ())):
            m.events.append(g.interview(child, at + rng.randint(2, 60) * HOUR_MS, [], []))
    m.events.sort(key=lambda e: e["occurred_at"])
    return m
