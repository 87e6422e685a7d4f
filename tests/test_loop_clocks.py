"""The statutory clock state machine (no Kafka): start, meet, escalate, replay."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.loop.calendar import MS_PER_HOUR, WorkingCalendar
from broker.loop.clocks import ClockRule, Clocks, ClockState, Measure, Status

RED = ClockRule(
    kind="TRIAGE_RED",
    measure=Measure.ELAPSED,
    duration_ms=4 * MS_PER_HOUR,
    stops_on=frozenset({"TRIAGE"}),
    tier_gap_ms=2 * MS_PER_HOUR,
)
RULES = {"TRIAGE_RED": RED}
T0 = 1_780_000_000_000


def red(event_id: str = "e1", start: int = T0) -> ClockState:
    due = RED.due_ms(start, WorkingCalendar(), WorkingCalendar())
    return ClockState(
        clock_id=f"TRIAGE_RED:{event_id}:mash",
        kind="TRIAGE_RED",
        event_id=event_id,
        subject="hmac",
        owner="mash",
        started_ms=start,
        due_ms=due,
        escalate_to=("mash-manager", "head-of-service"),
    )


def commit(clocks: Clocks, now: int) -> list[tuple[str, int, str]]:
    """One tick whose writes commit: apply what it escalated."""
    out = clocks.due(now)
    for e in out:
        clocks.apply(e.state)
    clocks.settle()
    return [(e.state.clock_id, e.tier, e.recipient) for e in out]


def test_an_unacknowledged_red_concern_escalates_once_per_tier() -> None:
    clocks = Clocks(RULES)
    clocks.start(red())
    assert commit(clocks, T0 + 4 * MS_PER_HOUR - 1) == []
    assert commit(clocks, T0 + 4 * MS_PER_HOUR) == [("TRIAGE_RED:e1:mash", 1, "mash-manager")]
    assert commit(clocks, T0 + 5 * MS_PER_HOUR) == []  # never the same tier twice
    assert commit(clocks, T0 + 6 * MS_PER_HOUR) == [("TRIAGE_RED:e1:mash", 2, "head-of-service")]
    assert commit(clocks, T0 + 100 * MS_PER_HOUR) == []  # no tiers left
    assert clocks.get("TRIAGE_RED:e1:mash").tiers_escalated == 2  # type: ignore[union-attr]


def test_a_red_concern_triaged_at_3h59_never_escalates() -> None:
    clocks = Clocks(RULES)
    clocks.start(red())
    done = clocks.stop("TRIAGE_RED:e1:mash", T0 + 3 * MS_PER_HOUR + 59 * 60_000, by="mash")
    assert done.status is Status.MET and done.late_by_ms == 0
    assert commit(clocks, T0 + 1_000 * MS_PER_HOUR) == []
    assert len(clocks) == 0


def test_a_clock_met_late_records_by_how_much() -> None:
    clocks = Clocks(RULES)
    clocks.start(red())
    commit(clocks, T0 + 4 * MS_PER_HOUR)
    done = clocks.stop("TRIAGE_RED:e1:mash", T0 + 5 * MS_PER_HOUR, by="mash")
    assert done.status is Status.MET_LATE
    assert done.late_by_ms == MS_PER_HOUR


def test_a_tick_catching_up_escalates_every_passed_tier_in_order() -> None:
    clocks = Clocks(RULES)
    clocks.start(red())
    got = commit(clocks, T0 + 10 * MS_PER_HOUR)
    assert [tier for _, tier, _ in got] == [1, 2]


def test_an_aborted_escalation_is_found_again_and_only_once() -> None:
    clocks = Clocks(RULES)
    clocks.start(red())
    first = clocks.due(T0 + 4 * MS_PER_HOUR)
    assert len(first) == 1
    clocks.release()  # the transaction aborted: nothing applied
    assert commit(clocks, T0 + 4 * MS_PER_HOUR) == [("TRIAGE_RED:e1:mash", 1, "mash-manager")]
    assert commit(clocks, T0 + 4 * MS_PER_HOUR) == []


def test_state_rebuilt_from_the_changelog_escalates_the_same_way() -> None:
    log: list[ClockState] = []
    a = Clocks(RULES)
    for i in range(5):
        s = a.start(red(f"e{i}", T0 + i * MS_PER_HOUR))
        assert s is not None
        log.append(s)
    log.append(a.stop("TRIAGE_RED:e0:mash", T0 + MS_PER_HOUR, by="mash"))
    for e in a.due(T0 + 6 * MS_PER_HOUR):
        a.apply(e.state)
        log.append(e.state)
    a.settle()

    b = Clocks(RULES)  # a restarted process reading the changelog
    for s in log:
        b.apply(s)
    assert b.start(red("e1", T0 + MS_PER_HOUR)) is None  # a replayed start is ignored
    later = T0 + 20 * MS_PER_HOUR
    assert commit(a, later) == commit(b, later)


def test_an_older_changelog_value_never_undoes_an_escalation() -> None:
    clocks = Clocks(RULES)
    opened = red()
    clocks.apply(opened)
    escalated = clocks.due(T0 + 4 * MS_PER_HOUR)[0].state
    clocks.apply(escalated)
    clocks.settle()
    clocks.apply(opened)  # replayed out of order
    assert clocks.get(opened.clock_id) == escalated
    assert commit(clocks, T0 + 5 * MS_PER_HOUR) == []


def test_next_fire_time_skips_stopped_clocks() -> None:
    clocks = Clocks(RULES)
    clocks.start(red("a", T0))
    clocks.start(red("b", T0 + MS_PER_HOUR))
    clocks.stop("TRIAGE_RED:a:mash", T0 + 1, by="mash")
    assert clocks.next_fire_ms() == T0 + 5 * MS_PER_HOUR


@settings(max_examples=60, deadline=None)
@given(
    starts=st.lists(st.integers(0, 20 * MS_PER_HOUR), min_size=1, max_size=40),
    stops=st.lists(st.tuples(st.integers(0, 39), st.integers(0, 30 * MS_PER_HOUR)), max_size=20),
    ticks=st.lists(st.integers(0, 40 * MS_PER_HOUR), min_size=1, max_size=8),
)
def test_the_heap_and_the_plain_scan_escalate_the_same(
    starts: list[int], stops: list[tuple[int, int]], ticks: list[int]
) -> None:
    fast, plain = Clocks(RULES), Clocks(RULES)
    for i, t in enumerate(starts):
        fast.start(red(f"e{i}", T0 + t))
        plain.start(red(f"e{i}", T0 + t))
    for i, at in stops:
        cid = f"TRIAGE_RED:e{i}:mash"
        if cid in fast:
            assert fast.stop(cid, T0 + at, by="m") == plain.stop(cid, T0 + at, by="m")
    for now in sorted(ticks):
        a = fast.due(T0 + now)
        b = plain.due_plainly(T0 + now)
        key = lambda e: (e.state.clock_id, e.tier)  # noqa: E731
        assert sorted(a, key=key) == sorted(b, key=key)
        for e in a:
            fast.apply(e.state)
            plain.apply(e.state)
        fast.settle()
