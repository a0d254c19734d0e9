"""webhook.jobs: the web side names worker jobs by dotted path; each name must resolve."""

from __future__ import annotations

import importlib
import re

import pytest
from rq.job import JOB_ID_PATTERN

from webhook import jobs

SID = "38f8e3cfdc474cd56fc1ceba380d7e1a"
NOTICE_ID = "042b393a8973450a0603ac823b95cc8b"


def job_names() -> dict[str, str]:
    """Module-level UPPERCASE string constants of webhook.jobs that look like dotted paths."""
    return {
        name: value
        for name, value in vars(jobs).items()
        if name.isupper() and isinstance(value, str) and "." in value
    }


def test_there_are_job_names_to_check() -> None:
    assert "PROCESS_CALLBACK" in job_names()


@pytest.mark.parametrize(("constant", "dotted"), sorted(job_names().items()))
def test_every_job_name_imports_to_a_callable(constant: str, dotted: str) -> None:
    module_name, _, attribute = dotted.rpartition(".")

    target = getattr(importlib.import_module(module_name), attribute)

    assert callable(target), constant


def test_the_callback_job_id_is_deterministic() -> None:
    assert jobs.callback_job_id(SID, NOTICE_ID) == jobs.callback_job_id(SID, NOTICE_ID)


def test_the_callback_job_id_is_a_valid_rq_job_id() -> None:
    job_id = jobs.callback_job_id(SID, NOTICE_ID)

    assert re.fullmatch(r"[A-Za-z0-9_-]+", job_id)
    assert JOB_ID_PATTERN.fullmatch(job_id)


def test_the_callback_job_id_is_valid_even_for_ids_rq_would_refuse() -> None:
    job_id = jobs.callback_job_id("sid:with.dots", "notice/with~punctuation!")

    assert JOB_ID_PATTERN.fullmatch(job_id)


def test_different_notice_ids_get_different_job_ids() -> None:
    assert jobs.callback_job_id(SID, NOTICE_ID) != jobs.callback_job_id(SID, NOTICE_ID[::-1])


def test_the_same_notice_id_in_different_sessions_gets_different_job_ids() -> None:
    assert jobs.callback_job_id(SID, NOTICE_ID) != jobs.callback_job_id(SID[::-1], NOTICE_ID)
