"""Working-time arithmetic for statutory clocks (no Kafka)."""

from __future__ import annotations

from datetime import date, datetime, time
from zoneinfo import ZoneInfo

import pytest

from broker.loop.calendar import MS_PER_HOUR, CalendarError, WorkingCalendar, parse_weekdays

LONDON = ZoneInfo("Europe/London")
CAL = WorkingCalendar()


def ms(y: int, mo: int, d: int, h: int = 0, mi: int = 0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=LONDON).timestamp() * 1000)


def test_bank_holidays_come_from_the_calendar_package() -> None:
    assert not CAL.is_working_day(date(2027, 3, 29))  # Easter Monday 2027
    assert CAL.holiday_name(date(2027, 3, 29)) == "Easter Monday"
    assert not CAL.is_working_day(date(2026, 12, 28))  # Boxing Day (substitute)
    assert CAL.is_working_day(date(2026, 12, 29))
    assert not CAL.is_working_day(date(2026, 12, 5))  # a Saturday


def test_working_hours_skip_nights_weekends_and_bank_holidays() -> None:
    # Friday 16:00 + 8 working hours: 1 h on Friday, Monday 4 May 2026 is a
    # bank holiday, so 7 h on Tuesday -> Tuesday 16:00.
    due = CAL.add_working_ms(ms(2026, 5, 1, 16), 8 * MS_PER_HOUR)
    assert due == ms(2026, 5, 5, 16)


def test_a_clock_started_out_of_hours_counts_from_the_next_opening() -> None:
    assert CAL.add_working_ms(ms(2026, 12, 1, 22), MS_PER_HOUR) == ms(2026, 12, 2, 10)
    assert CAL.add_working_ms(ms(2026, 12, 2, 7), MS_PER_HOUR) == ms(2026, 12, 2, 10)
    assert CAL.add_working_ms(ms(2026, 12, 5, 12), MS_PER_HOUR) == ms(2026, 12, 7, 10)


def test_24_working_hours_is_three_working_days() -> None:
    assert CAL.add_working_ms(ms(2026, 12, 1, 9), 24 * MS_PER_HOUR) == ms(2026, 12, 3, 17)


def test_working_day_stays_nine_to_five_across_the_clock_change() -> None:
    # Clocks go forward on Sunday 29 March 2026; Friday 16:00 + 2 h -> Monday 10:00 BST.
    due = CAL.add_working_ms(ms(2026, 3, 27, 16), 2 * MS_PER_HOUR)
    assert due == ms(2026, 3, 30, 10)
    assert datetime.fromtimestamp(due / 1000, LONDON).hour == 10


def test_working_ms_between_agrees_with_add() -> None:
    start = ms(2026, 12, 18, 15, 30)
    for hours in (0, 1, 5, 8, 24, 40):
        due = CAL.add_working_ms(start, hours * MS_PER_HOUR)
        assert CAL.working_ms_between(start, due) == hours * MS_PER_HOUR


def test_encompass_friday_evening_before_a_bank_holiday_monday_is_due_tuesday_morning() -> None:
    school = WorkingCalendar(day_start=time(8, 30), day_end=time(15, 30))
    # Friday 1 May 2026 17:30; Monday 4 May is the early May bank holiday.
    assert school.next_day_start(ms(2026, 5, 1, 17, 30)) == ms(2026, 5, 5, 8, 30)
    # In the small hours of a school day the notice is due that same morning.
    assert school.next_day_start(ms(2026, 5, 5, 2)) == ms(2026, 5, 5, 8, 30)
    # During the school day it is due before the next one starts.
    assert school.next_day_start(ms(2026, 5, 5, 10)) == ms(2026, 5, 6, 8, 30)


def test_extra_closures_are_not_working_days() -> None:
    cal = WorkingCalendar(extra_closures=frozenset({date(2026, 12, 7)}))
    assert cal.next_day_start(ms(2026, 12, 4, 18)) == ms(2026, 12, 8, 9)


def test_bad_calendars_say_what_is_wrong() -> None:
    with pytest.raises(CalendarError, match="start before it ends"):
        WorkingCalendar(day_start=time(17), day_end=time(9))
    with pytest.raises(CalendarError, match="unknown weekday 'funday'"):
        parse_weekdays(["mon", "funday"])
    assert parse_weekdays(["Monday", "TUE"]) == frozenset({0, 1})
    with pytest.raises(CalendarError, match="negative"):
        CAL.add_working_ms(0, -1)


@pytest.mark.parametrize("zone", ["Europe/London", "America/St_Johns", "Asia/Kathmandu",
                                  "Australia/Lord_Howe", "Pacific/Chatham"])
def test_kept_dates_and_windows_give_the_plain_deadlines(zone: str) -> None:
    """add_working_ms keeps each UTC hour's local date and a fortnight of working hours
    per date; the deadlines are those of the plain day-at-a-time walk, in zones with
    half-hour, 45-minute and half-hour-DST offsets, around each clock change, over
    bank holidays and Christmas, for durations from nothing to weeks."""
    import random  # noqa: PLC0415

    cal = WorkingCalendar(timezone=zone, extra_closures=frozenset({date(2026, 12, 31)}))
    rng = random.Random(20261206)
    tz = ZoneInfo(zone)
    starts = [rng.randrange(ms(2025, 1, 1), ms(2028, 1, 1)) for _ in range(1500)]
    # every 7 minutes across the days around each clock change of 2026 in this zone
    for month in range(1, 13):
        for day in range(1, 29):
            a = datetime(2026, month, day, tzinfo=tz)
            b = datetime(2026, month, day, 23, 59, tzinfo=tz)
            if a.utcoffset() != b.utcoffset():
                base = int(a.timestamp() * 1000) - 2 * 86_400_000
                starts += range(base, base + 5 * 86_400_000, 11 * 60_000 + 1)
    durations = [0, 1, MS_PER_HOUR, 8 * MS_PER_HOUR, 24 * MS_PER_HOUR, 100 * MS_PER_HOUR]
    for start in starts:
        for duration in durations:
            assert cal.add_working_ms(start, duration) == cal._add_working_ms_plainly(
                start, duration
            ), (zone, start, duration)
    with pytest.raises(CalendarError, match="negative"):
        cal.add_working_ms(starts[0], -1)
