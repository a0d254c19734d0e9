"""intake.ensure_fresh: notifyMs must lie in [arrival - max age, arrival + skew]."""

from __future__ import annotations

from datetime import timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.errors import NotifyInFutureError, NotifyTooOldError
from webhook.intake import ensure_fresh

MAX_AGE = timedelta(hours=1)
SKEW = timedelta(minutes=5)
ARRIVAL = 1_800_000_000_000


def check(notify_ms: int | None) -> None:
    ensure_fresh(notify_ms, received_ms=ARRIVAL, max_age=MAX_AGE, skew=SKEW)


@pytest.mark.parametrize("offset_ms", [0, -3_600_000, 300_000, -1, 1])
def test_inside_the_window_passes(offset_ms: int) -> None:
    check(ARRIVAL + offset_ms)


def test_older_than_the_max_age_is_a_replay() -> None:
    with pytest.raises(NotifyTooOldError) as refused:
        check(ARRIVAL - 3_600_001)

    assert (refused.value.status, refused.value.reason) == (400, "notify_ms_too_old")


def test_further_ahead_than_the_skew_is_refused() -> None:
    with pytest.raises(NotifyInFutureError) as refused:
        check(ARRIVAL + 300_001)

    assert (refused.value.status, refused.value.reason) == (400, "notify_ms_in_future")


def test_a_callback_without_notify_ms_cannot_be_judged_and_passes() -> None:
    check(None)


@given(offset_ms=st.integers(-(2**62), 2**62))
def test_refused_exactly_outside_the_window(offset_ms: int) -> None:
    if offset_ms < -MAX_AGE.total_seconds() * 1000:
        with pytest.raises(NotifyTooOldError):
            check(ARRIVAL + offset_ms)
    elif offset_ms > SKEW.total_seconds() * 1000:
        with pytest.raises(NotifyInFutureError):
            check(ARRIVAL + offset_ms)
    else:
        check(ARRIVAL + offset_ms)
