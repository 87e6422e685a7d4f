"""Statutory clocks: when each share must be acted on, and who hears when it is not.

A clock starts from an event (a concern shared with a MASH, a police
domestic-abuse notice shared with a school, a missing child's return, a
break-glass share), falls due by its :class:`ClockRule`, stops at the
acknowledgement that meets it, and escalates in tiers once it is overdue.

The engine is a pure state machine over UTC milliseconds: every change is a
:class:`ClockState` value that the service writes to Kafka in the same
transaction as the escalation it causes, and :meth:`Clocks.apply` rebuilds the
same state from those values after a restart. So a deadline is never lost, and
a tier never escalates twice: the record that says "tier 1 escalated" commits
with the escalation or not at all.
"""

from __future__ import annotations

import heapq
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import time
from enum import StrEnum

from broker.loop.calendar import MS_PER_HOUR, WorkingCalendar


class Measure(StrEnum):
    ELAPSED = "elapsed"  # wall-clock hours, day and night
    WORKING = "working"  # office hours on working days only
    NEXT_DAY_START = "next_day_start"  # before the next working (school) day starts


class Status(StrEnum):
    OPEN = "OPEN"
    MET = "MET"
    MET_LATE = "MET_LATE"
    CANCELLED = "CANCELLED"


@dataclass(frozen=True)
class ClockRule:
    """How one kind of clock runs, from the policy's ``clocks`` section.

    ``stops_on`` names the acknowledgement kinds that meet the clock. Who is
    told when it is overdue belongs to the clock's owner (its ``escalate_to``
    in the policy): the first tier when the clock falls due, each next one
    ``tier_gap_ms`` later.
    """

    kind: str
    measure: Measure
    duration_ms: int = 0
    day_start: time | None = None
    stops_on: frozenset[str] = frozenset()
    tier_gap_ms: int = 4 * MS_PER_HOUR
    description: str = ""

    def due_ms(self, start_ms: int, working: WorkingCalendar, school: WorkingCalendar) -> int:
        if self.measure is Measure.ELAPSED:
            return start_ms + self.duration_ms
        if self.measure is Measure.WORKING:
            return working.add_working_ms(start_ms, self.duration_ms)
        return school.next_day_start(start_ms, self.day_start)


@dataclass(frozen=True, slots=True)
class ClockState:
    """One clock as the changelog holds it (keyed by ``clock_id``)."""

    clock_id: str
    kind: str
    event_id: str
    subject: str  # the partnership pseudonym's audit HMAC, never a name
    owner: str  # the subscriber (or agency) whose action stops the clock
    started_ms: int
    due_ms: int
    escalate_to: tuple[str, ...] = ()  # tier 1, tier 2, ... recipients
    status: Status = Status.OPEN
    tiers_escalated: int = 0
    stopped_ms: int | None = None
    stopped_by: str | None = None

    @property
    def late_by_ms(self) -> int:
        """How late the clock was met (0 if on time or still open)."""
        if self.stopped_ms is None:
            return 0
        return max(0, self.stopped_ms - self.due_ms)


@dataclass(frozen=True, slots=True)
class Escalation:
    """A clock that passed a tier: who to tell, and the state that records it."""

    state: ClockState
    tier: int  # 1-based
    recipient: str
    overdue_by_ms: int


class UnknownClockError(KeyError):
    """An acknowledgement or rule names a clock or kind the engine does not hold."""


class Clocks:
    """Open clocks ordered by their next firing time.

    A heap of ``(fire_ms, clock_id)`` with lazy deletion: a stopped clock's
    entry stays in the heap until it surfaces and is dropped, so start, stop
    and tick are O(log n) and a tick that finds nothing due is O(1).
    """

    def __init__(self, rules: dict[str, ClockRule]) -> None:
        self._rules = rules
        self._open: dict[str, ClockState] = {}
        self._heap: list[tuple[int, str]] = []
        self._claimed: list[tuple[int, str]] = []

    # -- reading ----------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._open)

    def __contains__(self, clock_id: object) -> bool:
        return clock_id in self._open

    def get(self, clock_id: str) -> ClockState | None:
        return self._open.get(clock_id)

    def open_clocks(self) -> Iterator[ClockState]:
        return iter(self._open.values())

    def rule(self, kind: str) -> ClockRule:
        try:
            return self._rules[kind]
        except KeyError:
            raise UnknownClockError(f"no clock rule for kind {kind!r}") from None

    def next_fire_ms(self) -> int | None:
        """When the next tier falls due, or ``None`` with nothing open."""
        self._drop_stale()
        return self._heap[0][0] if self._heap else None

    # -- changes (each returns the state to write to the changelog) --------------
    def start(self, state: ClockState) -> ClockState | None:
        """Open a clock; ``None`` if this clock id is already known (a replay)."""
        if state.clock_id in self._open:
            return None
        self.apply(state)
        return state

    def stop(self, clock_id: str, at_ms: int, by: str) -> ClockState:
        """Meet a clock: MET if on time, MET_LATE (with ``late_by_ms``) if not."""
        state = self._open.get(clock_id)
        if state is None:
            raise UnknownClockError(f"no open clock {clock_id!r}")
        status = Status.MET if at_ms <= state.due_ms else Status.MET_LATE
        done = replace(state, status=status, stopped_ms=at_ms, stopped_by=by)
        self.apply(done)
        return done

    def due(self, now_ms: int) -> list[Escalation]:
        """Every tier that has fallen due by ``now_ms``, oldest first.

        The returned states are not applied: the caller writes them with the
        escalations, then calls :meth:`apply` for each and :meth:`settle` once
        the transaction commits, or :meth:`release` if it aborts, so that the
        next tick finds the same clocks due again.
        """
        out: list[Escalation] = []
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            fire_ms, clock_id = heapq.heappop(heap)
            state = self._open.get(clock_id)
            if state is None or self._fire_ms(state) != fire_ms:
                continue  # stale: stopped, or already escalated past this tier
            self._claimed.append((fire_ms, clock_id))
            out.extend(self._tiers_due(state, now_ms))
        return out

    def due_plainly(self, now_ms: int) -> list[Escalation]:
        """:meth:`due` by a scan of every open clock: its plain twin, for tests
        and the benchmark's baseline (O(n) a tick instead of O(due log n))."""
        out: list[Escalation] = []
        for state in self._open.values():
            out.extend(self._tiers_due(state, now_ms))
        out.sort(key=lambda e: (self._tier_ms(e.state, e.tier), e.state.clock_id, e.tier))
        return out

    def settle(self) -> None:
        """The escalations from :meth:`due` were written and applied: forget the claims."""
        self._claimed.clear()

    def release(self) -> None:
        """Put back what :meth:`due` took but was not applied (an aborted write)."""
        for entry in self._claimed:
            heapq.heappush(self._heap, entry)
        self._claimed.clear()

    def apply(self, state: ClockState) -> None:
        """Take a changelog value: open or update a clock, or close it."""
        if state.status is not Status.OPEN:
            self._open.pop(state.clock_id, None)
            return
        known = self._open.get(state.clock_id)
        if known is not None and known.tiers_escalated > state.tiers_escalated:
            return  # an older value replayed after a newer one
        self._open[state.clock_id] = state
        fire = self._fire_ms(state)
        if fire is not None:
            heapq.heappush(self._heap, (fire, sys.intern(state.clock_id)))

    # -- internals ----------------------------------------------------------------
    def _tiers_due(self, state: ClockState, now_ms: int) -> Iterator[Escalation]:
        """Each tier of one clock that has fallen due by ``now_ms``, in order."""
        tier = state.tiers_escalated + 1
        while tier <= len(state.escalate_to) and self._tier_ms(state, tier) <= now_ms:
            state = replace(state, tiers_escalated=tier)
            yield Escalation(state, tier, state.escalate_to[tier - 1], now_ms - state.due_ms)
            tier += 1

    def _tier_ms(self, state: ClockState, tier: int) -> int:
        return state.due_ms + (tier - 1) * self._rules[state.kind].tier_gap_ms

    def _fire_ms(self, state: ClockState) -> int | None:
        if state.kind not in self._rules or state.tiers_escalated >= len(state.escalate_to):
            return None
        return self._tier_ms(state, state.tiers_escalated + 1)

    def _drop_stale(self) -> None:
        heap = self._heap
        while heap:
            fire_ms, clock_id = heap[0]
            state = self._open.get(clock_id)
            if state is not None and self._fire_ms(state) == fire_ms:
                return
            heapq.heappop(heap)
