"""Tests for resilience._retry_after: Retry-After / retry-after-ms parsing and the delay hook."""

from __future__ import annotations

import email.utils
import math

from datetime import UTC, datetime, timedelta, timezone
from email.message import Message
from types import SimpleNamespace

import freezegun
import httpx
import pytest
import requests

from hypothesis import given, settings
from hypothesis import strategies as st
from requests.structures import CaseInsensitiveDict

from resilience._retry_after import (
    _lower_headers,
    _rfc850_year,
    parse_retry_after,
    retry_after_from,
)


DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
LONG_DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

NOW = datetime(1994, 11, 6, 8, 49, 0, tzinfo=UTC)


def imf_fixdate(dt: datetime) -> str:
    """Format a UTC datetime as an IMF-fixdate."""
    return email.utils.format_datetime(dt, usegmt=True)


def rfc850_date(dt: datetime) -> str:
    """Format a UTC datetime in the obsolete RFC 850 format."""
    return (
        f"{LONG_DAYS[dt.weekday()]}, {dt.day:02d}-{MONTHS[dt.month - 1]}-{dt.year % 100:02d} "
        f"{dt:%H:%M:%S} GMT"
    )


def asctime_date(dt: datetime) -> str:
    """Format a UTC datetime in the ANSI C asctime format."""
    return f"{DAYS[dt.weekday()]} {MONTHS[dt.month - 1]} {dt.day:2d} {dt:%H:%M:%S} {dt.year:04d}"


# --- delta-seconds and retry-after-ms -------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0.0),
        ("120", 120.0),
        ("007", 7.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("  30\t", 30.0),
        (b"42", 42.0),
        (5, 5.0),
        (2.5, 2.5),
    ],
)
def test_delta_seconds(value, expected):
    """Delta-seconds, decimals, padding, bytes and numbers parse to their value."""
    assert expected == parse_retry_after({"Retry-After": value})


@pytest.mark.parametrize(
    "value",
    [
        "",
        "   ",
        "-5",
        "-0",
        "+5",
        "1e3",
        "1E3",
        "nan",
        "NaN",
        "inf",
        "Infinity",
        "-inf",
        "1_000",
        ".5",
        "5.",
        "1.2.3",
        "5 s",
        "0x10",
        "\u0665",  # ARABIC-INDIC DIGIT FIVE: float() accepts it, HTTP does not
        "\u00a05",  # a no-break space is not HTTP whitespace
        "9" * 400,  # overflows to inf
        -3,
        float("nan"),
        float("inf"),
        1e20,  # stringifies with an exponent
        True,
    ],
)
def test_invalid_values_give_none(value):
    """Signs, exponents, non-finite numbers, junk and empty values give None."""
    assert None is parse_retry_after({"Retry-After": value})


def test_absent_header_and_none_container_give_none():
    """No Retry-After header, a None value or no container at all gives None."""
    assert None is parse_retry_after({"Content-Type": "text/plain"})
    assert None is parse_retry_after({"Retry-After": None})
    assert None is parse_retry_after(None)
    assert None is parse_retry_after([])


def test_milliseconds_win_over_seconds():
    """A parseable retry-after-ms takes precedence over retry-after."""
    assert 1.5 == parse_retry_after({"Retry-After": "10", "Retry-After-Ms": "1500"})
    assert 1.5005 == parse_retry_after({"retry-after-ms": "1500.5", "retry-after": "10"})
    assert 0.25 == parse_retry_after({"RETRY-AFTER-MS": b"250"})


@pytest.mark.parametrize("millis", ["", "soon", "-100", "nan", "inf", "1e3", "9" * 400, None])
def test_unparseable_milliseconds_fall_back_to_seconds(millis):
    """An unparseable retry-after-ms is ignored and retry-after is read."""
    assert 10.0 == parse_retry_after({"retry-after-ms": millis, "retry-after": "10"})


def test_unparseable_milliseconds_alone_give_none():
    """An unparseable retry-after-ms without retry-after gives None."""
    assert None is parse_retry_after({"retry-after-ms": "-1"})


def test_no_caps_or_zero_rules():
    """Parsing is faithful: huge and zero values are returned as they are."""
    assert 0.0 == parse_retry_after({"Retry-After": "0"})
    assert 1e30 == parse_retry_after({"Retry-After": "1" + "0" * 30})


# --- HTTP-dates -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 06 Nov 1994 08:49:37 GMT",
        "Sunday, 06-Nov-94 08:49:37 GMT",
        "Sun Nov  6 08:49:37 1994",
        "Sun Nov 06 08:49:37 1994",
        "sun, 06 NOV 1994 08:49:37 gmt",
        "SUNDAY, 06-nov-94 08:49:37 Gmt",
        "  Sun, 06 Nov 1994 08:49:37 GMT\r\n",
        b"Sun, 06 Nov 1994 08:49:37 GMT",
    ],
)
def test_http_date_formats(value):
    """All three RFC 9110 date formats parse, case-insensitively, relative to now."""
    assert 37.0 == parse_retry_after({"Retry-After": value}, now=NOW)


@pytest.mark.parametrize(
    "value",
    [
        "Sun, 6 Nov 1994 08:49:37 GMT",  # one-digit day
        "Sun, 06 Nov 94 08:49:37 GMT",  # two-digit year in IMF-fixdate
        "Sun, 06 Nov 1994 08:49:37 UTC",
        "Sun, 06 Nov 1994 08:49:37 +0000",
        "Sun, 06 Nov 1994 08:49:37",
        "Sun,  06 Nov 1994 08:49:37 GMT",
        "Sunday, 06 Nov 1994 08:49:37 GMT",  # long day name in IMF-fixdate
        "Sun, 06-Nov-94 08:49:37 GMT",  # short day name in RFC 850
        "Sunday, 06-Nov-1994 08:49:37 GMT",
        "Sun Nov 6 08:49:37 1994",  # asctime pads the day with a space
        "Sun Nov  6 08:49:37 1994 GMT",
        "Sun, 06 Novembre 1994 08:49:37 GMT",
        "Sun, 06 Nov 1994 8:49:37 GMT",
        "Sun, 06 Nov 1994 08:49 GMT",
        "Xyz, 06 Nov 1994 08:49:37 GMT",
        "1994-11-06T08:49:37Z",
        "Sun, 06 Nov 1994 08:49:37 GMT\u212a",
        "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",  # non-ASCII digits
    ],
)
def test_malformed_dates_give_none(value):
    """Anything outside the three strict grammars gives None."""
    assert None is parse_retry_after({"Retry-After": value}, now=NOW)


@pytest.mark.parametrize(
    "value",
    [
        "Wed, 30 Feb 2000 00:00:00 GMT",
        "Thu, 29 Feb 2001 00:00:00 GMT",
        "Mon, 31 Apr 2000 00:00:00 GMT",
        "Mon, 00 Jan 2000 00:00:00 GMT",
        "Mon, 01 Jan 2000 24:00:00 GMT",
        "Mon, 01 Jan 2000 00:60:00 GMT",
        "Mon, 01 Jan 2000 00:00:61 GMT",
        "Mon, 01 Jan 2000 12:00:60 GMT",  # a leap second only exists at 23:59:60
        "Mon, 01 Jan 0000 00:00:00 GMT",
        "Wednesday, 30-Feb-00 00:00:00 GMT",
        "Wed Feb 30 00:00:00 2000",
    ],
)
def test_invalid_calendar_dates_give_none(value):
    """Dates and times that do not exist give None."""
    assert None is parse_retry_after({"Retry-After": value}, now=NOW)


def test_leap_second():
    """23:59:60 is one second after 23:59:59."""
    now = datetime(2016, 12, 31, 23, 59, 0, tzinfo=UTC)
    assert 60.0 == parse_retry_after({"Retry-After": "Sat, 31 Dec 2016 23:59:60 GMT"}, now=now)


def test_past_date_gives_zero():
    """A date before now gives 0.0, not a negative delay."""
    assert 0.0 == parse_retry_after({"Retry-After": "Sun, 06 Nov 1994 08:48:00 GMT"}, now=NOW)
    assert 0.0 == parse_retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:00 GMT"}, now=NOW)


def test_now_in_another_time_zone():
    """An aware now in any zone is compared in absolute time."""
    now = NOW.astimezone(timezone(timedelta(hours=-5)))
    assert 37.0 == parse_retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}, now=now)


def test_naive_now_is_utc():
    """A naive now is taken as UTC."""
    naive = datetime(1994, 11, 6, 8, 49, 0)
    assert 37.0 == parse_retry_after({"Retry-After": "Sun, 06 Nov 1994 08:49:37 GMT"}, now=naive)


def test_now_none_reads_the_frozen_clock():
    """With now=None the current time is read at call time, so freezegun applies."""
    with freezegun.freeze_time("2030-01-01 00:00:00"):
        assert 10.0 == parse_retry_after({"Retry-After": "Tue, 01 Jan 2030 00:00:10 GMT"})
    with freezegun.freeze_time("2030-01-01 00:00:05"):
        assert 5.0 == parse_retry_after({"Retry-After": "Tue, 01 Jan 2030 00:00:10 GMT"})


def test_rfc850_year_within_fifty_years_is_in_the_future():
    """A two-digit year at most 50 years ahead is read in the current century."""
    now = datetime(2000, 1, 1, tzinfo=UTC)
    when = datetime(2049, 6, 1, tzinfo=UTC)
    expected = (when - now).total_seconds()
    assert expected == parse_retry_after({"Retry-After": rfc850_date(when)}, now=now)
    assert 2049 == _rfc850_year(49, (6, 1, 0, 0, 0), now)
    assert 2050 == _rfc850_year(50, (1, 1, 0, 0, 0), now)  # exactly 50 years: not "more than"


def test_rfc850_year_beyond_fifty_years_is_in_the_past():
    """A two-digit year more than 50 years ahead means the most recent past such year."""
    now = datetime(2000, 1, 1, tzinfo=UTC)
    assert 0.0 == parse_retry_after({"Retry-After": "Friday, 01-Jun-51 00:00:00 GMT"}, now=now)
    assert 1951 == _rfc850_year(51, (6, 1, 0, 0, 0), now)
    assert 1950 == _rfc850_year(50, (1, 1, 0, 0, 1), now)  # one second past 50 years
    assert 1994 == _rfc850_year(94, (11, 6, 8, 49, 37), NOW)
    # Near a century's end the window reaches into the next one.
    assert 2101 == _rfc850_year(1, (1, 1, 0, 0, 0), datetime(2090, 1, 1, tzinfo=UTC))


# --- header containers ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["Retry-After", "retry-after", "RETRY-AFTER", "rEtRy-AfTeR"])
def test_names_are_case_insensitive_in_a_plain_dict(name):
    """A plain dict is searched case-insensitively."""
    assert 3.0 == parse_retry_after({"Content-Type": "text/plain", name: "3"})


def test_httpx_headers():
    """httpx.Headers work, and a repeated header yields its first value, not a joined one."""
    assert 3.0 == parse_retry_after(httpx.Headers({"Retry-After": "3"}))
    headers = httpx.Headers(
        [
            ("Retry-After", "Sun, 06 Nov 1994 08:49:37 GMT"),
            ("Retry-After", "Sun, 06 Nov 1994 08:50:00 GMT"),
        ]
    )
    assert 37.0 == parse_retry_after(headers, now=NOW)


def test_httpx_raw_bytes_pairs():
    """httpx raw headers, a list of bytes pairs, are decoded as latin-1."""
    raw = httpx.Headers({"Retry-After-Ms": "2500", "Retry-After": "9"}).raw
    assert 2.5 == parse_retry_after(raw)
    assert 4.0 == parse_retry_after([(b"RETRY-AFTER", b"4")])


def test_requests_case_insensitive_dict():
    """requests' CaseInsensitiveDict works."""
    assert 7.0 == parse_retry_after(CaseInsensitiveDict({"RETRY-AFTER": "7"}))


def test_email_message():
    """An email.message.Message (iterating over names only) works."""
    message = Message()
    message["Content-Type"] = "text/plain"
    message["Retry-After"] = "120"
    assert 120.0 == parse_retry_after(message)


def test_list_of_tuples_first_value_wins():
    """In a list of pairs the first non-None value of a name wins."""
    pairs = [("X-Other", "1"), ("retry-after", None), ("Retry-After", "8"), ("RETRY-AFTER", "9")]
    assert 8.0 == parse_retry_after(pairs)


def test_odd_containers_and_entries_never_raise():
    """Unreadable containers, malformed entries and failing __str__ give None, not errors."""

    class Exploding:
        def __iter__(self):
            raise RuntimeError("boom")

    class BadStr:
        def __str__(self):
            raise RuntimeError("boom")

    assert None is parse_retry_after(Exploding())
    assert None is parse_retry_after(42)  # type: ignore[arg-type]
    assert None is parse_retry_after("Retry-After: 5")  # type: ignore[arg-type]
    assert None is parse_retry_after({"Retry-After": BadStr()})
    assert None is parse_retry_after({"Retry-After": 10**5000})  # past int->str digit limit
    assert 5.0 == parse_retry_after([("Retry-After",), ("a", "b", "c"), ("Retry-After", "5")])  # type: ignore[list-item]
    assert 5.0 == parse_retry_after([(BadStr(), "1"), (None, "2"), ("Retry-After", "5")])


def test_lower_headers():
    """The helper lowers names, decodes values and keeps the first non-None value."""
    lowered = _lower_headers([(b"A", b"\xe9"), ("a", "x"), ("B", None), ("b", 2), ("C", 1.5)])
    assert {"a": "\xe9", "b": "2", "c": "1.5"} == lowered
    assert {"b": "2"} == _lower_headers({"A": "1", "B": "2"}, names={"b"})
    assert {} == _lower_headers(None)


# --- retry_after_from -----------------------------------------------------------------


def test_retry_after_from_response_headers():
    """An outcome's .response.headers are read first."""
    outcome = SimpleNamespace(
        response=SimpleNamespace(headers={"Retry-After": "2"}), headers={"Retry-After": "9"}
    )
    assert 2.0 == retry_after_from(outcome)


def test_retry_after_from_headers():
    """Without .response, an outcome's own .headers are read."""
    assert 6.0 == retry_after_from(SimpleNamespace(headers={"retry-after": "6"}))


def test_retry_after_from_neither():
    """An outcome with neither attribute gives None."""
    assert None is retry_after_from(ValueError("nope"))
    assert None is retry_after_from(None)
    assert None is retry_after_from(SimpleNamespace(response=SimpleNamespace()))


def test_retry_after_from_response_none_is_skipped():
    """A .response that is None is skipped in favour of .headers."""
    assert 6.0 == retry_after_from(SimpleNamespace(response=None, headers={"Retry-After": "6"}))
    assert None is retry_after_from(SimpleNamespace(response=None))


def test_retry_after_from_httpx_status_error():
    """httpx.HTTPStatusError carries the response whose headers are read."""
    request = httpx.Request("GET", "https://example.invalid/")
    response = httpx.Response(429, headers={"Retry-After": "3"}, request=request)
    error = httpx.HTTPStatusError("too many", request=request, response=response)
    assert 3.0 == retry_after_from(error)
    assert 3.0 == retry_after_from(response)


def test_retry_after_from_requests_http_error():
    """requests.HTTPError works even though a 5xx requests.Response is falsy."""
    response = requests.Response()
    response.status_code = 503
    response.headers["Retry-After"] = "4"
    assert not response
    assert 4.0 == retry_after_from(requests.HTTPError("unavailable", response=response))
    assert None is retry_after_from(requests.HTTPError("no response"))


def test_retry_after_from_raising_property():
    """A property that raises is treated as missing."""

    class Weird:
        @property
        def response(self):
            raise RuntimeError("boom")

        headers = {"Retry-After": "1"}

    assert 1.0 == retry_after_from(Weird())


# --- properties -----------------------------------------------------------------------


HEADER_NAMES = st.one_of(
    st.sampled_from(["Retry-After", "retry-after", "RETRY-AFTER-MS", "retry-after-ms", "X-Other"]),
    st.text(max_size=16),
    st.binary(max_size=16),
    st.integers(),
)
DATE_LIKE = st.one_of(
    st.builds(
        "{}, {:02d} {} {:04d} {:02d}:{:02d}:{:02d} GMT".format,
        st.sampled_from(DAYS),
        st.integers(0, 99),
        st.sampled_from(MONTHS),
        st.integers(0, 9999),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
    ),
    st.builds(
        "{}, {:02d}-{}-{:02d} {:02d}:{:02d}:{:02d} GMT".format,
        st.sampled_from(LONG_DAYS),
        st.integers(0, 99),
        st.sampled_from(MONTHS),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
    ),
    st.builds(
        "{} {} {:>2d} {:02d}:{:02d}:{:02d} {:04d}".format,
        st.sampled_from(DAYS),
        st.sampled_from(MONTHS),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 99),
        st.integers(0, 9999),
    ),
)
HEADER_VALUES = st.one_of(
    st.none(),
    st.text(),
    st.binary(),
    st.integers(),
    st.floats(),
    st.from_regex(r"[ \t]*[+-]?[0-9]*\.?[0-9]*([eE][+-]?[0-9]+)?[ \t]*", fullmatch=True),
    DATE_LIKE,
)
FIXED_OFFSETS = st.builds(
    timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
)
NOWS = st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(9999, 12, 30),
    timezones=st.one_of(st.just(UTC), FIXED_OFFSETS),
)
DATES = st.datetimes(
    min_value=datetime(1970, 1, 1),
    max_value=datetime(9999, 12, 31, 23, 59, 59),
    timezones=st.just(UTC),
).map(lambda dt: dt.replace(microsecond=0))


@settings(max_examples=200)
@given(pairs=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=6), now=NOWS)
def test_fuzz_never_raises(pairs, now):
    """Any names and values give None or a finite non-negative float, never an error."""
    for headers in (pairs, dict(pairs)):
        result = parse_retry_after(headers, now=now)
        assert result is None or (type(result) is float and math.isfinite(result) and result >= 0)


@settings(max_examples=100)
@given(text=st.from_regex(r"[0-9]{1,30}(\.[0-9]{1,12})?", fullmatch=True))
def test_round_trip_numbers(text):
    """Delta-seconds parse to float(text) and milliseconds to float(text) / 1000."""
    assert float(text) == parse_retry_after({"Retry-After": text})
    assert float(text) / 1000 == parse_retry_after({"Retry-After-Ms": text, "Retry-After": "1"})


@settings(max_examples=100)
@given(seconds=st.integers(min_value=0, max_value=10**18))
def test_round_trip_integers(seconds):
    """Any non-negative integer of seconds round-trips, as str and as int."""
    assert float(seconds) == parse_retry_after({"Retry-After": str(seconds)})
    assert float(seconds) == parse_retry_after({"Retry-After": seconds})


@settings(max_examples=150)
@given(when=DATES, now=NOWS)
def test_imf_fixdate_and_asctime_round_trip(when, now):
    """IMF-fixdate and asctime renderings of any date parse to the delay from now."""
    expected = max(0.0, (when - now).total_seconds())
    assert expected == parse_retry_after({"Retry-After": imf_fixdate(when)}, now=now)
    assert expected == parse_retry_after({"Retry-After": asctime_date(when)}, now=now)


@st.composite
def rfc850_cases(draw):
    """Draw a now and a date whose two-digit year the 50-year rule resolves to itself."""
    now = draw(NOWS)
    year = now.astimezone(UTC).year
    low, high = max(1970, year - 49), min(9999, year + 49)
    when = draw(
        st.datetimes(
            min_value=datetime(low, 1, 1),
            max_value=datetime(high, 12, 31, 23, 59, 59),
            timezones=st.just(UTC),
        )
    )
    return when.replace(microsecond=0), now


@settings(max_examples=150)
@given(case=rfc850_cases())
def test_rfc850_round_trip(case):
    """RFC 850 renderings within 50 years of now parse to the delay from now."""
    when, now = case
    expected = max(0.0, (when - now).total_seconds())
    assert expected == parse_retry_after({"Retry-After": rfc850_date(when)}, now=now)
