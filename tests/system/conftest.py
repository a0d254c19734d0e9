"""Fixtures for the tests that start real processes (gunicorn, the worker, make run)."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest

from tests.conftest import example_files
from webhook.store import now_ms

DAY_S = 24 * 3600


@pytest.fixture(scope="session", autouse=True)
def example_notify_ms_accepted() -> Iterator[None]:
    """Let the services these tests start accept the example files as they are.

    Those processes read their settings from the environment, and tests send
    tests/data/callbacks/*.json byte for byte: copies of Agora's examples, whose notifyMs
    is fixed (June 2025). Production refuses a notifyMs older than a day, so the age window
    here reaches back to the oldest example (and the dedupe window covers it, as the start
    requires). The check stays on, bounds and all; tests/integration/test_replay.py holds
    it to the production defaults. A runner that sets either variable keeps its own.
    """
    names = ("AGORA_MAX_NOTIFY_AGE_SECONDS", "AGORA_DEDUPE_WINDOW_SECONDS")
    with pytest.MonkeyPatch.context() as env:
        if not any(name in os.environ for name in names):
            oldest = min(json.loads(path.read_text())["notifyMs"] for path in example_files())
            age_s = (now_ms() - oldest) // 1000 + DAY_S
            env.setenv(names[0], str(age_s))
            env.setenv(names[1], str(age_s + DAY_S))
        yield
