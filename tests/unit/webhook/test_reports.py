"""The timeline's gaps: what never arrived below the highest sequence seen."""

from __future__ import annotations

import pytest

from webhook.reports import missing_sequences


def test_the_gaps_are_the_numbers_below_the_highest_that_never_arrived():
    assert missing_sequences({0, 3, 5}) == [1, 2, 4]


def test_no_sequence_and_no_gap_give_an_empty_list():
    assert missing_sequences(set()) == []
    assert missing_sequences({0, 1, 2}) == []


def test_only_the_first_gaps_are_listed():
    assert missing_sequences({0, 5000}, limit=3) == [1, 2, 3]


# One signed callback may carry any sequence: walking up to it would take the worker's
# memory and never end (a QA run saw a gunicorn worker killed at ~23 GB).
@pytest.mark.timeout(10)
def test_a_wild_sequence_costs_what_arrived_not_what_it_says():
    gaps = missing_sequences({*range(100), 2**70})

    assert gaps == list(range(100, 1100))
