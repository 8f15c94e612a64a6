"""The 12-month window a run embeds, and day-of-year counted from its first day.

By default a year is the calendar year (UTC dates), and a date's day of year is its ordinal
(Jan 1 -> 1, Dec 31 of a leap year -> 366), as the reference stacks it (reference-spec 1.5).
The reference's maintainers say the model also accepts other 12-month windows; ``period`` gives
the window's first month-day (``"10-01"`` for an agricultural year from October). The window of
year ``Y`` then runs from ``Y-MM-DD`` to the day before ``(Y+1)-MM-DD``, and day 1 is its first
day, so a window's days are numbered 1..365, or 1..366 when it holds a 29 February.

``02-29`` is refused as a start: it does not exist in three years out of four.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from tessera.errors import PeriodError

__all__ = ["CALENDAR_START", "Window", "parse_period", "parse_window", "window"]

#: The default window start: the calendar year.
CALENDAR_START = (1, 1)
_MONTH_DAY = re.compile(r"(\d{2})-(\d{2})")


def parse_period(period: str | None) -> tuple[int, int]:
    """``(month, day)`` of a ``period`` setting; None means the calendar year.

    Raises:
        PeriodError: ``period`` is not ``MM-DD``, is not a day of the calendar, or is ``02-29``.
    """
    if period is None:
        return CALENDAR_START
    match = _MONTH_DAY.fullmatch(str(period).strip())
    if match is None:
        raise PeriodError(
            f"period {period!r} is not a month-day: write the window's first day as MM-DD, "
            "e.g. '10-01' for a year from 1 October (or leave period unset for the calendar year)"
        )
    month, day = int(match.group(1)), int(match.group(2))
    if (month, day) == (2, 29):
        raise PeriodError("period '02-29' does not exist in every year; start the window on '02-28' or '03-01' instead")
    try:
        dt.date(2000, month, day)  # a leap year, so only real month-days pass
    except ValueError:
        raise PeriodError(
            f"period {period!r} is not a day of the calendar (month 01-12, day valid in that month); "
            "fix the period setting, e.g. '10-01'"
        ) from None
    return month, day


@dataclass(frozen=True)
class Window:
    """The 12 months embedded for one year: ``start`` to ``end``, both included (UTC dates)."""

    year: int
    """The year that names the window (the year of ``start``)."""
    start: dt.date
    """First day (day 1)."""
    end: dt.date
    """Last day: the day before the same month-day one year later."""

    @property
    def is_calendar_year(self) -> bool:
        """True for 1 January to 31 December."""
        return (self.start.month, self.start.day) == CALENDAR_START

    @property
    def days(self) -> int:
        """Number of days: 365, or 366 when the window holds a 29 February."""
        return (self.end - self.start).days + 1

    def day_of_year(self, date: str | dt.date) -> int:
        """1-based day of ``date`` counted from the window's first day (the calendar ordinal by default).

        Raises:
            ValueError: ``date`` lies outside the window.
        """
        d = dt.date.fromisoformat(date) if isinstance(date, str) else date
        if not self.start <= d <= self.end:
            raise ValueError(f"{d} lies outside the window {self.label}")
        return (d - self.start).days + 1

    def contains(self, date: str | dt.date) -> bool:
        """Whether ``date`` lies in the window."""
        d = dt.date.fromisoformat(date) if isinstance(date, str) else date
        return self.start <= d <= self.end

    @property
    def label(self) -> str:
        """ISO 8601 interval of dates, ``"2022-10-01/2023-09-30"``."""
        return f"{self.start.isoformat()}/{self.end.isoformat()}"

    def datetime_range(self) -> str:
        """The STAC search ``datetime`` interval covering every instant of the window (UTC)."""
        return f"{self.start.isoformat()}T00:00:00Z/{self.end.isoformat()}T23:59:59.999999Z"


def window(year: int, period: str | None = None) -> Window:
    """The window of ``year`` that starts on the month-day ``period`` (None: the calendar year).

    Raises:
        PeriodError: ``period`` is not a valid month-day (`parse_period`).
    """
    month, day = parse_period(period)
    start = dt.date(year, month, day)
    end = dt.date(year + 1, month, day) - dt.timedelta(days=1)
    return Window(year, start, end)


def parse_window(label: str) -> Window:
    """The `Window` of its `Window.label` (``"2022-10-01/2023-09-30"``).

    Raises:
        ValueError: ``label`` is not two ISO dates 12 months apart.
    """
    try:
        start, end = (dt.date.fromisoformat(part) for part in label.split("/"))
    except ValueError:
        raise ValueError(f"{label!r} is not a window 'YYYY-MM-DD/YYYY-MM-DD'") from None
    span = window(start.year, f"{start.month:02d}-{start.day:02d}")
    if span.end != end:
        raise ValueError(f"{label!r} is not a 12-month window: it would end on {span.end}")
    return span
