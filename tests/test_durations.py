"""The one duration grammar (tokensmith.durations) and every caller that uses it."""

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tokensmith import durations
from tokensmith.cli.access_keys import parse_duration as access_key_duration
from tokensmith.cli.client import CliError
from tokensmith.errors import InvalidInput
from tokensmith.tokens.expiration import parse_duration as expiration
from tokensmith.tokens.rotation import parse_grace

UNITS = {"s": timedelta(seconds=1), "m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1),
         "w": timedelta(weeks=1), "y": timedelta(days=365)}


@pytest.mark.parametrize(("text", "expected"), [
    ("30m", timedelta(minutes=30)), ("8h", timedelta(hours=8)), ("30d", timedelta(days=30)),
    ("12w", timedelta(weeks=12)), ("1y", timedelta(days=365)), ("0s", timedelta(0)), (" 90s ", timedelta(seconds=90)),
])
def test_the_grammar_examples_mean_what_they_say(text, expected):
    assert durations.parse_duration(text) == expected


@given(amount=st.integers(min_value=0, max_value=9_999_999), unit=st.sampled_from(sorted(UNITS)))
def test_any_number_and_unit_is_that_many_units_up_to_a_century(amount, unit):
    if amount > durations.LONGEST // UNITS[unit]:
        with pytest.raises(InvalidInput, match="far too long"):
            durations.parse_duration(f"{amount}{unit}")
    else:
        assert durations.parse_duration(f"{amount}{unit}") == amount * UNITS[unit]


@pytest.mark.parametrize("text", ["1M", "1mo", "3months", "1 month"])
def test_months_are_refused_with_a_hint(text):
    with pytest.raises(InvalidInput, match=r"use 30d or 4w, not 1M/1mo"):
        durations.parse_duration(text)


@pytest.mark.parametrize(("text", "hint"), [("30 days", "write 30d"), ("30days", "write 30d"),
                                            ("2 hours", "write 2h"), ("3 d", "write 3d")])
def test_words_and_spaces_are_refused_with_the_short_form(text, hint):
    with pytest.raises(InvalidInput, match=hint):
        durations.parse_duration(text)


@pytest.mark.parametrize("text", ["tomorrow", "", "-1d", "1.5h", "d", "3600", "1x", "\u0663d"])
def test_other_text_is_refused_naming_the_grammar(text):
    with pytest.raises(InvalidInput, match=r"e\.g\. 30m, 8h, 30d, 12w, 1y"):
        durations.parse_duration(text)


@given(text=st.text(max_size=30))
def test_any_text_parses_or_is_refused_with_invalid_input_never_another_error(text):
    try:
        assert durations.parse_duration(text, "grace") >= timedelta(0)
    except InvalidInput as exc:
        assert exc.field == "grace"


def test_m_is_minutes_for_token_expiry_grace_and_access_keys_alike():
    assert expiration("1m") == timedelta(minutes=1)
    assert parse_grace("1m") == timedelta(minutes=1)
    assert access_key_duration("1m") == 60


def test_every_caller_refuses_a_month_with_the_same_hint():
    for parse in (expiration, parse_grace):
        with pytest.raises(InvalidInput, match="not 1M/1mo"):
            parse("1M")
    with pytest.raises(CliError, match="not 1M/1mo"):
        access_key_duration("1M")


def test_access_keys_keep_permanent_and_refuse_unitless_seconds():
    assert access_key_duration("permanent") == 0
    with pytest.raises(CliError, match="no unit"):
        access_key_duration("900")


def test_token_expiry_must_be_positive_but_grace_may_be_zero():
    with pytest.raises(InvalidInput, match="positive"):
        expiration("0s")
    assert parse_grace("0s") == timedelta(0)


@pytest.mark.parametrize(("text", "expected"), [
    ("2027-01-31", datetime(2027, 1, 31, tzinfo=UTC)),
    ("2027-01-31T12:30:00Z", datetime(2027, 1, 31, 12, 30, tzinfo=UTC)),
    ("2027-01-31T12:30:00+02:00", datetime(2027, 1, 31, 10, 30, tzinfo=UTC)),
])
def test_dates_are_a_day_at_midnight_utc_or_an_rfc3339_instant(text, expected):
    assert durations.parse_instant(text) == expected


@pytest.mark.parametrize(("text", "message"), [("2027-02-30", "not a calendar date"), ("tomorrow", "YYYY-MM-DD"),
                                               ("2027-01-31T12:00:00", "no timezone"), ("30d", "YYYY-MM-DD")])
def test_bad_dates_are_refused_naming_the_date_grammar(text, message):
    with pytest.raises(InvalidInput, match=message):
        durations.parse_instant(text)


@pytest.mark.parametrize(("delta", "text"), [
    (timedelta(hours=23), "23 hours"), (timedelta(days=1, hours=2), "1 day"), (timedelta(minutes=5), "5 minutes"),
    (timedelta(days=30) - timedelta(seconds=1), "30 days"), (timedelta(days=400), "400 days"),
    (timedelta(days=800), "2 years"),
])
def test_humanize_never_says_zero_days_for_hours(delta, text):
    assert durations.humanize(delta) == text
