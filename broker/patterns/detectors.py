"""The detectors, without Kafka: what an observation adds and which alerts it raises.

An observation is what one routed event says that a pattern needs: a child's
missing episode, a place a child was last seen, found or named at, a person,
vehicle or phone number named in an event about a child, a child's return
from a missing episode and return-home interview, an event's risk level. Each detector keeps
its observations in a window and fires when a threshold is met; the alert id
is derived from what the pattern is about (the child, the place key, the
person key), so a pattern is raised once and every further observation that
matches it updates the same alert with a higher version, never a new one.

State is plain data (:class:`Observation` and :class:`AlertState`) so the
service can write each change to its changelog and rebuild from it.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace

from broker.patterns.links import Links
from broker.patterns.normalise import PlaceKey, same_name, same_place

DAY_MS = 86_400_000


class Kind:
    REPEAT_MISSING = "REPEAT_MISSING"
    SHARED_PLACE = "SHARED_PLACE"
    SHARED_PERSON = "SHARED_PERSON"
    OVERDUE_INTERVIEW = "OVERDUE_INTERVIEW"  # a child's return with no interview in time
    OVERDUE_AREA = "OVERDUE_AREA"  # overdue interviews of several children in one area
    RISING_RISK = "RISING_RISK"  # a child's risk level rising across recent events

    ALL = (REPEAT_MISSING, SHARED_PLACE, SHARED_PERSON, OVERDUE_INTERVIEW, OVERDUE_AREA,
           RISING_RISK)
    # Observations that feed a detector but are not themselves alert kinds.
    RETURNED = "RETURNED"  # key: the child; at: when found or returned
    INTERVIEWED = "INTERVIEWED"  # key: the child; at: the return-home interview
    # Kinds keyed by the child: a link counts the linked children's keys as one.
    BY_CHILD = frozenset((REPEAT_MISSING, OVERDUE_INTERVIEW, RISING_RISK, RETURNED, INTERVIEWED))


#: The order of ``safeshare.RiskLevel`` (its symbols are ordered LOW < ... < CRITICAL).
RISK_ORDER = {"LOW": 0, "MEDIUM": 1, "HIGH": 2, "CRITICAL": 3}


@dataclass(frozen=True)
class Threshold:
    """Fire at ``count`` distinct episodes (children, rises) within ``days``.

    ``hours`` is the overdue-interview deadline after a return (0 elsewhere).
    """

    count: int
    days: int
    hours: int = 0

    @property
    def window_ms(self) -> int:
        return self.days * DAY_MS


HOUR_MS = 3_600_000
#: How long after an interview's deadline (in event time) the decision waits: an
#: interview held in time but reported a little late, or read from another feed
#: partition after later events, still counts.
GRACE_MS = 12 * HOUR_MS

DEFAULTS: dict[str, Threshold] = {
    Kind.REPEAT_MISSING: Threshold(3, 30),
    Kind.SHARED_PLACE: Threshold(3, 28),
    Kind.SHARED_PERSON: Threshold(2, 90),
    # Statutory guidance: a return-home interview within 72 hours of a return.
    Kind.OVERDUE_INTERVIEW: Threshold(1, 30, 72),
    Kind.OVERDUE_AREA: Threshold(3, 28),
    Kind.RISING_RISK: Threshold(2, 30),
}


@dataclass(frozen=True)
class Observation:
    """One fact from one event. ``key`` is the child (repeat missing), the place
    key (shared place) or the person/thing key (shared person)."""

    kind: str
    key: str
    child: str
    event_id: str
    at_ms: int
    block: str = ""
    local_authority: str = ""
    level: str = ""  # RISING_RISK only: the event's risk level

    @property
    def id(self) -> str:
        return f"{self.kind}|{self.key}|{self.child}|{self.event_id}"


@dataclass(frozen=True)
class AlertState:
    """An alert as last published: its id, version and evidence."""

    alert_id: str
    kind: str
    key: str
    version: int
    children: tuple[str, ...]
    event_ids: tuple[str, ...]
    first_ms: int
    last_ms: int
    local_authorities: tuple[str, ...] = ()
    # False on a version published because a link left the pattern below its
    # threshold (the alert is kept for a person to review, not withdrawn).
    meets: bool = True
    decision: str = ""  # the identity decision that made this version, if one did
    count: int = 0  # what was counted against the threshold, when ``meets`` is False


def alert_id(kind: str, key: str) -> str:
    """Deterministic: the same pattern always has the same id (no personal data in clear)."""
    digest = hashlib.sha256(f"{kind}\x00{key}".encode()).hexdigest()[:24]
    return f"pattern-{kind.lower().replace('_', '-')}-{digest}"


@dataclass
class Detectors:
    """Every detector's observations and alerts, and the rule to fire."""

    thresholds: dict[str, Threshold] = field(default_factory=lambda: dict(DEFAULTS))
    # kind -> key -> observations (in arrival order)
    _obs: dict[str, dict[str, list[Observation]]] = field(
        default_factory=lambda: defaultdict(dict))
    # fuzzy place keys by block, to find the canonical key a new text place matches
    _text_places: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    _names: list[str] = field(default_factory=list)
    alerts: dict[str, AlertState] = field(default_factory=dict)
    # returns waiting for their interview deadline: (deadline, id, the return)
    _pending: list[tuple[int, str, Observation]] = field(default_factory=list)
    links: Links = field(default_factory=Links)

    # -- canonical keys -------------------------------------------------------------
    def canonical_place(self, place: PlaceKey) -> str:
        """The key a place is counted under: an earlier free-text place it matches, or its own."""
        if place.exact:
            return place.key
        candidates = self._text_places[place.block]
        for known in candidates:
            if same_place(place, PlaceKey(known, place.block)):
                return known
        return place.key

    def canonical_person(self, key: str) -> str:
        """``name:`` keys are matched fuzzily to names seen before; other keys exactly."""
        if not key.startswith("name:"):
            return key
        name = key[5:]
        for known in self._names:
            if same_name(name, known):
                return "name:" + known
        return key

    # -- state ----------------------------------------------------------------------
    def remember(self, obs: Observation) -> bool:
        """Add an observation; False if it was already known (a replayed event)."""
        per_key = self._obs[obs.kind].setdefault(obs.key, [])
        if any(o.id == obs.id for o in per_key):
            return False
        per_key.append(obs)
        texts = self._text_places[obs.block]
        if obs.kind == Kind.SHARED_PLACE and obs.key.startswith("text:") and obs.key not in texts:
            texts.append(obs.key)
        name = obs.key[5:]
        if obs.kind == Kind.SHARED_PERSON and obs.key.startswith("name:") and \
                name not in self._names:
            self._names.append(name)
        if obs.kind == Kind.RETURNED:
            deadline = obs.at_ms + self.thresholds[Kind.OVERDUE_INTERVIEW].hours * HOUR_MS
            heapq.heappush(self._pending, (deadline, obs.id, obs))
        return True

    def restore_alert(self, alert: AlertState) -> None:
        self.alerts[alert.alert_id] = alert

    def observations(self) -> Iterator[Observation]:
        for per_kind in self._obs.values():
            for per_key in per_kind.values():
                yield from per_key

    def expire(self, now_ms: int) -> list[Observation]:
        """Forget observations older than their window; returns them (for the changelog)."""
        gone: list[Observation] = []
        for kind, per_kind in self._obs.items():
            window = self.thresholds[_RULE.get(kind, kind)].window_ms
            for key in list(per_kind):
                keep = [o for o in per_kind[key] if o.at_ms > now_ms - window]
                if len(keep) != len(per_kind[key]):
                    gone += [o for o in per_kind[key] if o.at_ms <= now_ms - window]
                    if keep:
                        per_kind[key] = keep
                    else:
                        del per_kind[key]
        return gone

    # -- firing ---------------------------------------------------------------------
    def _gather(self, kind: str, key: str) -> list[Observation]:
        """The observations counted under ``key``: a linked child's with its survivor's."""
        per_kind = self._obs[kind]
        if kind not in Kind.BY_CHILD or not self.links.into:
            return per_kind.get(key, [])
        group = self.links.members(key)
        if len(group) == 1:
            return per_kind.get(key, [])
        return [o for child in group for o in per_kind.get(child, ())]

    def _live(self, kind: str, key: str) -> tuple[list[Observation], int]:
        """The observations within the window ending at the newest, and their count
        (episodes, rises, or children with linked children counted once)."""
        rule = self.thresholds[kind]
        obs = self._gather(kind, key)
        if not obs:
            return [], 0
        if kind in (Kind.OVERDUE_INTERVIEW, Kind.OVERDUE_AREA) and self.links.into:
            obs = [o for o in obs if not self._met_under_another(o)]
            if not obs:
                return [], 0
        newest = max(o.at_ms for o in obs)
        live = sorted((o for o in obs if o.at_ms > newest - rule.window_ms),
                      key=lambda o: (o.at_ms, o.event_id))
        if kind == Kind.RISING_RISK:
            live = _rising(live)
            count = len(live) - 1
        elif kind in (Kind.REPEAT_MISSING, Kind.OVERDUE_INTERVIEW):
            count = len({o.event_id for o in live})
        elif self.links.into:
            canonical = self.links.canonical
            count = len({canonical(o.child) for o in live})
        else:
            count = len({o.child for o in live})
        return live, count

    def _met_under_another(self, late: Observation) -> bool:
        """Whether an overdue return was met in time by an interview of the same child
        under a pseudonym since linked to its own (a return judged before the link)."""
        group = self.links.members(self.links.canonical(late.child))
        if len(group) == 1:
            return False
        deadline = late.at_ms + self.thresholds[Kind.OVERDUE_INTERVIEW].hours * HOUR_MS
        interviews = self._obs[Kind.INTERVIEWED]
        return any(late.at_ms <= i.at_ms <= deadline for child in group if child != late.child
                   for i in interviews.get(child, ()))

    def evaluate(self, kind: str, key: str, decision: str = "") -> AlertState | None:
        """The new version of the alert for ``(kind, key)`` if it fires and changed, else None.

        Counted within the window ending at the newest observation: event time, not
        arrival time, so a replay decides the same. ``decision``: the identity
        decision this evaluation follows, if any (named in the version it makes).
        """
        live, count = self._live(kind, key)
        if not live or count < self.thresholds[kind].count:
            return None
        aid = alert_id(kind, key)
        children = tuple(dict.fromkeys(o.child for o in live))
        events = tuple(dict.fromkeys(o.event_id for o in live))
        las = tuple(sorted({o.local_authority for o in live if o.local_authority}))
        old = self.alerts.get(aid)
        if old is not None and old.meets and set(events) <= set(old.event_ids) and \
                set(children) <= set(old.children):
            return None  # nothing new: never repeated
        new = AlertState(
            alert_id=aid, kind=kind, key=key, version=1 if old is None else old.version + 1,
            children=children if old is None else _merge(old.children, children),
            event_ids=events if old is None else _merge(old.event_ids, events),
            first_ms=live[0].at_ms if old is None else min(old.first_ms, live[0].at_ms),
            last_ms=live[-1].at_ms, local_authorities=las, decision=decision,
        )
        self.alerts[aid] = new
        return new

    # -- links ----------------------------------------------------------------------
    def relink(self, other: str, into: str | None, decision: str) -> list[AlertState]:
        """A person linked ``other`` into ``into`` (None: unlinked it): the alerts
        this raises, updates, or leaves below their threshold.

        Every pattern either child's observations count in is counted again. One
        that meets its threshold is raised or updated as by a new observation; an
        alert that met it before the change and does not now (counted under the
        survivor, for a child's own patterns) gets a version saying so (``meets``
        False, naming the decision): kept for a person, not withdrawn.
        """
        links = self.links
        group = {other, *links.members(links.canonical(other))}
        if into is not None:
            group |= set(links.members(links.canonical(into)))
        # A link changes who is counted, not which place or person: those keys are
        # found once (a scan of the state); a child's own are looked up.
        places = self._places_of(group)
        before = [k for k in sorted(self._of_children(group) | places) if self._meets(*k)]
        if not links.set(other, into):
            return []
        fired: list[AlertState] = []
        for kind, key in sorted(self._of_children(group) | places):
            if (alert := self.evaluate(kind, key, decision)) is not None:
                fired.append(alert)
        for kind, key in before:
            now = links.canonical(key) if kind in Kind.BY_CHILD else key
            old = self.alerts.get(alert_id(kind, key))
            if old is None or not old.meets or self._meets(kind, now):
                continue
            new = replace(old, version=old.version + 1, meets=False, decision=decision,
                          count=self._live(kind, now)[1])
            self.alerts[new.alert_id] = new
            fired.append(new)
        return fired

    def _meets(self, kind: str, key: str) -> bool:
        return self._live(kind, key)[1] >= self.thresholds[kind].count

    def _of_children(self, children: set[str]) -> set[tuple[str, str]]:
        """(kind, key) of the children's own alert kinds, keyed as counted now."""
        canonical = self.links.canonical
        return {(kind, canonical(c)) for kind in Kind.ALL if kind in Kind.BY_CHILD
                for c in children if c in self._obs.get(kind, {})}

    def _places_of(self, children: set[str]) -> set[tuple[str, str]]:
        """(kind, key) of every place, person or area the children's observations are at."""
        return {(kind, key) for kind in Kind.ALL if kind not in Kind.BY_CHILD
                for key, obs in self._obs.get(kind, {}).items()
                if any(o.child in children for o in obs)}

    def observe(self, batch: Iterable[Observation]) -> tuple[list[Observation], list[AlertState]]:
        """Canonicalise, remember and evaluate: (new observations, alerts raised or updated)."""
        added: list[Observation] = []
        touched: dict[tuple[str, str], None] = {}
        for o in batch:
            if o.kind == Kind.SHARED_PLACE:
                o = replace(o, key=self.canonical_place(PlaceKey(o.key, o.block)))
            elif o.kind == Kind.SHARED_PERSON:
                o = replace(o, key=self.canonical_person(o.key))
            if self.remember(o):
                added.append(o)
                key = o.key
                if self.links.into and o.kind in Kind.BY_CHILD:
                    key = self.links.canonical(key)
                touched[(o.kind, key)] = None
        # Returns and interviews fire nothing themselves: :meth:`overdue` decides.
        fired = [a for k in touched if k[0] in Kind.ALL and (a := self.evaluate(*k)) is not None]
        return added, fired

    def overdue(self, now_ms: int) -> tuple[list[Observation], list[AlertState]]:
        """Returns whose interview deadline passed by ``now_ms`` (less :data:`GRACE_MS`)
        with no interview since.

        Each becomes an OVERDUE_INTERVIEW observation of its child and an OVERDUE_AREA
        one of its local authority; returns (those observations, alerts raised or updated).
        """
        late: list[Observation] = []
        while self._pending and self._pending[0][0] <= now_ms - GRACE_MS:
            deadline, _, ret = heapq.heappop(self._pending)
            # An interview of the child under a pseudonym linked to this one counts.
            interviews = self._gather(Kind.INTERVIEWED, self.links.canonical(ret.child))
            if any(ret.at_ms <= i.at_ms <= deadline for i in interviews):
                continue
            late.append(replace(ret, kind=Kind.OVERDUE_INTERVIEW))
            if ret.local_authority:
                late.append(replace(ret, kind=Kind.OVERDUE_AREA, key=ret.local_authority))
        return self.observe(late)

    def size(self) -> int:
        return sum(len(v) for per_kind in self._obs.values() for v in per_kind.values())


#: The rule whose window an observation kind is kept for.
_RULE = {Kind.RETURNED: Kind.OVERDUE_INTERVIEW, Kind.INTERVIEWED: Kind.OVERDUE_INTERVIEW}


def _rising(live: list[Observation]) -> list[Observation]:
    """The events at which the level rose, in the run of levels that never fell ending
    at the newest event, with the run's first event: ``LOW, MEDIUM, MEDIUM, HIGH`` gives
    the first, second and fourth (two rises); ``HIGH, LOW`` gives ``LOW`` (none)."""
    start = len(live) - 1
    while start > 0 and RISK_ORDER.get(live[start - 1].level, 0) <= \
            RISK_ORDER.get(live[start].level, 0):
        start -= 1
    steps = [live[start]] if live else []
    for o in live[start + 1:]:
        if RISK_ORDER.get(o.level, 0) > RISK_ORDER.get(steps[-1].level, 0):
            steps.append(o)
    return steps


def _merge(a: tuple[str, ...], b: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys((*a, *b)))
