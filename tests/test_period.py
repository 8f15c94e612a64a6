"""The 12-month window of a run (`tessera.period`): bounds, day-of-year from its start, bad periods."""

from __future__ import annotations

import datetime as dt

import pytest

from tessera.errors import ConfigError, PeriodError
from tessera.period import parse_period, window
from tessera.s2 import day_of_year


def test_default_is_the_calendar_year_with_todays_day_numbers() -> None:
    for year in (2022, 2024):
        w = window(year)
        assert (w.start, w.end, w.is_calendar_year) == (dt.date(year, 1, 1), dt.date(year, 12, 31), True)
        assert w.days == (366 if year == 2024 else 365)
        day = w.start
        while day <= w.end:  # identical to the ordinal the read step writes today, every day of the year
            assert w.day_of_year(day) == day_of_year(day)
            day += dt.timedelta(days=1)
    assert window(2022, "01-01") == window(2022)


def test_october_window_counts_days_from_its_start_across_a_leap_year() -> None:
    w = window(2023, "10-01")
    assert (w.start, w.end, w.days) == (dt.date(2023, 10, 1), dt.date(2024, 9, 30), 366)
    assert w.day_of_year("2023-10-01") == 1
    assert w.day_of_year("2023-12-31") == 92  # 31 + 30 + 31
    assert w.day_of_year("2024-01-01") == 93
    assert w.day_of_year("2024-02-28") == 151
    assert w.day_of_year("2024-02-29") == 152  # the leap day is inside this window
    assert w.day_of_year("2024-03-01") == 153
    assert w.day_of_year("2024-09-30") == 366
    assert w.label == "2023-10-01/2024-09-30"
    assert w.datetime_range() == "2023-10-01T00:00:00Z/2024-09-30T23:59:59.999999Z"
    assert not w.is_calendar_year


def test_window_without_a_leap_day_has_365_days() -> None:
    w = window(2022, "10-01")
    assert (w.end, w.days) == (dt.date(2023, 9, 30), 365)
    assert w.day_of_year("2023-03-01") == 152  # no 29 February in between
    assert w.day_of_year("2023-09-30") == 365
    # a window starting after February of a leap year does not hold its leap day
    assert window(2024, "03-01").days == 365
    assert window(2023, "03-01").days == 366  # ... but one that reaches into the next February does


def test_dates_outside_the_window_are_refused() -> None:
    w = window(2022, "10-01")
    assert w.contains("2022-10-01") and w.contains("2023-09-30")
    assert not w.contains("2022-09-30") and not w.contains("2023-10-01")
    with pytest.raises(ValueError, match="outside the window 2022-10-01/2023-09-30"):
        w.day_of_year("2022-09-30")


@pytest.mark.parametrize(
    ("period", "words"),
    [
        ("October", "not a month-day"),
        ("10/01", "not a month-day"),
        ("1-10", "not a month-day"),
        ("10-1", "not a month-day"),
        ("13-01", "not a day of the calendar"),
        ("04-31", "not a day of the calendar"),
        ("00-10", "not a day of the calendar"),
        ("02-29", "does not exist in every year"),
    ],
)
def test_bad_period_is_a_named_error(period: str, words: str) -> None:
    with pytest.raises(PeriodError, match=words) as info:
        parse_period(period)
    # catchable as the config error it is, and as the builtin ValueError
    assert isinstance(info.value, ConfigError) and isinstance(info.value, ValueError)
    assert "MM-DD" in str(info.value) or "'" in str(info.value)


def test_good_periods_parse() -> None:
    assert parse_period(None) == (1, 1)
    assert parse_period("10-01") == (10, 1)
    assert parse_period(" 02-28 ") == (2, 28)
    assert parse_period("12-31") == (12, 31)
