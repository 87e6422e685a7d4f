"""Working time for statutory clocks: office hours, weekends and bank holidays.

Safeguarding timescales are set in working hours and days ("a decision within
one working day", "Amber within 24 working hours") or in plain elapsed hours
("Red within 4 hours, day or night"). A :class:`WorkingCalendar` turns a start
time and a duration into a due time for either kind, and finds the start of
the next school day for Operation Encompass notices.

Bank holidays come from the maintained ``holidays`` package (England and Wales
share one list; ``subdiv="ENG"``), so Easter and substitute days are never
hand-typed. Times are UTC milliseconds, as everywhere else (broker/clock.py);
working hours are wall-clock times in the partnership's time zone, so a
working day stays 09:00-17:00 across the change to and from summer time.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

import holidays as _holidays

MS_PER_HOUR = 3_600_000
_WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# A deadline further away than this many calendar days is a configuration
# error (a calendar with no working days at all would otherwise loop forever).
_MAX_SEARCH_DAYS = 3_660
# Days of working hours kept from each start date (24 working hours span 3 to 7).
_AHEAD_DAYS = 14


class CalendarError(ValueError):
    """A calendar that cannot compute deadlines (no working days, bad hours)."""


@dataclass(frozen=True)
class WorkingCalendar:
    """Office hours on working days in one time zone, less bank holidays.

    ``extra_closures`` are further non-working dates (for example school
    holidays for a school-day calendar); ``holiday_region`` is a country and
    subdivision understood by the ``holidays`` package, or ``None`` for none.
    """

    timezone: str = "Europe/London"
    day_start: time = time(9, 0)
    day_end: time = time(17, 0)
    workdays: frozenset[int] = frozenset({0, 1, 2, 3, 4})
    holiday_region: tuple[str, str | None] | None = ("GB", "ENG")
    extra_closures: frozenset[date] = field(default_factory=frozenset)
    _windows: dict[date, tuple[int, int] | None] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _ahead: dict[date, tuple[tuple[int, int] | None, ...]] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )
    _dates: dict[int, date] = field(
        default_factory=dict, init=False, repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if not self.day_start < self.day_end:
            raise CalendarError(
                f"working day must start before it ends, not {self.day_start}-{self.day_end}"
            )
        if not self.workdays or not self.workdays <= set(range(7)):
            raise CalendarError("working days must be a non-empty set of weekdays 0-6")
        ZoneInfo(self.timezone)  # raises for an unknown zone
        # Working hours per date in UTC ms (not part of the value: no compare, no hash).
        object.__setattr__(self, "_windows", {})
        object.__setattr__(self, "_ahead", {})
        object.__setattr__(self, "_dates", {})

    # -- days -----------------------------------------------------------------
    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def is_working_day(self, day: date) -> bool:
        """A weekday the partnership works, not a bank holiday or closure."""
        if day.weekday() not in self.workdays or day in self.extra_closures:
            return False
        if self.holiday_region is None:
            return True
        return day not in _bank_holidays(self.holiday_region, day.year)

    def holiday_name(self, day: date) -> str | None:
        if self.holiday_region is None:
            return None
        name = _bank_holidays(self.holiday_region, day.year).get(day)
        return str(name) if name is not None else None

    def _next_working_day(self, day: date) -> date:
        for _ in range(_MAX_SEARCH_DAYS):
            day += timedelta(days=1)
            if self.is_working_day(day):
                return day
        raise CalendarError(f"no working day within {_MAX_SEARCH_DAYS} days after {day}")

    def _at(self, day: date, t: time) -> datetime:
        return datetime.combine(day, t, tzinfo=self.zone)

    # -- deadlines --------------------------------------------------------------
    def add_working_ms(self, start_ms: int, duration_ms: int) -> int:
        """The time ``duration_ms`` of working time after ``start_ms``.

        Time outside working hours does not count: a clock started on Friday
        at 16:00 with 8 working hours falls due on Monday at 16:00 (or Tuesday
        if Monday is a bank holiday).

        Called for nearly every share the router makes, so the local date of
        each UTC hour and the working hours of the fortnight from each date are
        kept; :meth:`_add_working_ms_plainly` is the same without them (tests
        hold the two equal).
        """
        if duration_ms < 0:
            raise CalendarError(f"a duration cannot be negative ({duration_ms} ms)")
        remaining = duration_ms
        now = start_ms
        for window in self._windows_from(self._date_of(start_ms)):
            if window is not None and now < window[1]:
                now = max(now, window[0])
                available = window[1] - now
                if remaining <= available:
                    return now + remaining
                remaining -= available
        raise CalendarError(
            f"{duration_ms} ms of working time do not fit in {_MAX_SEARCH_DAYS} days"
        )

    def _add_working_ms_plainly(self, start_ms: int, duration_ms: int) -> int:
        """:meth:`add_working_ms` with nothing kept: a day at a time."""
        if duration_ms < 0:
            raise CalendarError(f"a duration cannot be negative ({duration_ms} ms)")
        day = datetime.fromtimestamp(start_ms // 1000, tz=self.zone).date()
        remaining = duration_ms
        now = start_ms
        for _ in range(_MAX_SEARCH_DAYS):
            window = self._window(day)
            if window is not None and now < window[1]:
                now = max(now, window[0])
                available = window[1] - now
                if remaining <= available:
                    return now + remaining
                remaining -= available
            day += timedelta(days=1)
        raise CalendarError(
            f"{duration_ms} ms of working time do not fit in {_MAX_SEARCH_DAYS} days"
        )

    def _date_of(self, ms: int) -> date:
        """The local date at ``ms``, kept per UTC hour when the whole hour has one
        date and one UTC offset (no change of either inside it)."""
        hour = ms // MS_PER_HOUR
        found = self._dates.get(hour)
        if found is not None:
            return found
        zone = self.zone
        first = datetime.fromtimestamp(hour * MS_PER_HOUR // 1000, tz=zone)
        last = datetime.fromtimestamp((hour + 1) * MS_PER_HOUR // 1000 - 1, tz=zone)
        here = datetime.fromtimestamp(ms // 1000, tz=zone).date()
        if first.date() == last.date() == here and first.utcoffset() == last.utcoffset():
            if len(self._dates) > 4096:
                self._dates.clear()
            self._dates[hour] = here
        return here

    def _windows_from(self, day: date) -> Iterator[tuple[int, int] | None]:
        """The working hours of ``day`` and each day after it, for at most
        :data:`_MAX_SEARCH_DAYS` days (the first :data:`_AHEAD_DAYS` kept per day)."""
        kept = self._ahead.get(day)
        if kept is None:
            kept = tuple(self._window(day + timedelta(days=i)) for i in range(_AHEAD_DAYS))
            if len(self._ahead) > 1024:
                self._ahead.clear()
            self._ahead[day] = kept
        yield from kept
        day += timedelta(days=_AHEAD_DAYS)
        for _ in range(_MAX_SEARCH_DAYS - _AHEAD_DAYS):
            yield self._window(day)
            day += timedelta(days=1)

    def _window(self, day: date) -> tuple[int, int] | None:
        """The working hours of ``day`` as UTC ms, or ``None`` on a day off (cached)."""
        cache = self._windows
        if day not in cache:
            if len(cache) > 4096:
                cache.clear()
            cache[day] = (
                (_ms(self._at(day, self.day_start)), _ms(self._at(day, self.day_end)))
                if self.is_working_day(day) else None
            )
        return cache[day]

    def working_ms_between(self, start_ms: int, end_ms: int) -> int:
        """Working time between two instants (0 if ``end_ms`` is not after ``start_ms``)."""
        if end_ms <= start_ms:
            return 0
        total = 0
        day = _local(start_ms, self.zone).date()
        last = _local(end_ms, self.zone).date()
        while day <= last:
            window = self._window(day)
            if window is not None:
                total += max(0, min(end_ms, window[1]) - max(start_ms, window[0]))
            day += timedelta(days=1)
        return total

    def next_day_start(self, after_ms: int, start: time | None = None) -> int:
        """The first start of a working day strictly after ``after_ms``.

        With ``start`` (say 08:30 for a school) that time is used instead of the
        office start. A notice at 17:30 on the Friday before a bank-holiday
        Monday is due before 08:30 on Tuesday; one at 02:00 on a Tuesday is due
        before 08:30 the same morning.
        """
        begin = start or self.day_start
        now = _local(after_ms, self.zone)
        day = now.date()
        if self.is_working_day(day) and _ms(self._at(day, begin)) > after_ms:
            return _ms(self._at(day, begin))
        return _ms(self._at(self._next_working_day(day), begin))


def parse_weekdays(names: Iterable[str]) -> frozenset[int]:
    """``["mon", "tue", ...]`` (any case, 3 letters or more) to weekday numbers."""
    out = set()
    for name in names:
        key = str(name).strip().lower()[:3]
        if key not in _WEEKDAYS:
            raise CalendarError(f"unknown weekday {name!r}: use mon, tue, wed, thu, fri, sat, sun")
        out.add(_WEEKDAYS.index(key))
    return frozenset(out)


@lru_cache(maxsize=64)
def _bank_holidays(region: tuple[str, str | None], year: int) -> _holidays.HolidayBase:
    country, subdiv = region
    return _holidays.country_holidays(country, subdiv=subdiv, years=year)


_EPOCH = datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
_ONE_MS = timedelta(milliseconds=1)


def _local(ms: int, zone: ZoneInfo) -> datetime:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(zone)


def _ms(dt: datetime) -> int:
    return (dt - _EPOCH) // _ONE_MS
