"""The hand-off from the web side to the workers: job names and the enqueue helper.

The web side names jobs by dotted path, never by import, so it does not depend on the
workers package (a unit test imports each name, so a rename cannot break the hand-off).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue, Retry
from rq.exceptions import DuplicateJobError
from rq.serializers import JSONSerializer

from webhook.errors import StoreUnavailableError

logger = logging.getLogger(__name__)

PROCESS_CALLBACK = "workers.callbacks.process_callback"
RECONCILE_SESSION = "workers.reconcile.reconcile_session"

# Long enough for the reconciliation that follows a callback, a storage check included.
# It also bounds how long a dead in-process worker's job waits to be taken over: RQ
# counts it abandoned after timeout + 60 s without a heartbeat.
JOB_TIMEOUT_S = 60
# Transient failures (Redis blip, storage timeout, a busy session) and jobs whose worker
# died (RQ retries abandoned jobs that have retries left) are run again with backoff.
JOB_RETRY = Retry(max=5, interval=[1, 5, 15, 60, 120])


def callback_job_id(sid: str, notice_id: str) -> str:
    """Deterministic job id per callback: RQ ids allow only [A-Za-z0-9_-]."""
    digest = hashlib.sha256(f"{sid}\n{notice_id}".encode()).hexdigest()[:40]
    return f"callback-{digest}"


def callback_queue(redis: Redis, name: str) -> Queue:
    return Queue(name, connection=redis, serializer=JSONSerializer)


def enqueue_callback(queue: Queue, sid: str, notice_id: str, entry_id: str) -> bool:
    """Hand one stored callback to the workers; False if its job already exists.

    Raises:
        StoreUnavailableError: Redis did not accept the job.
    """
    try:
        queue.enqueue_call(
            PROCESS_CALLBACK,
            args=(sid, notice_id, entry_id),
            job_id=callback_job_id(sid, notice_id),
            unique=True,
            timeout=JOB_TIMEOUT_S,
            retry=JOB_RETRY,
            description=f"process callback {notice_id} of {sid}",
        )
    except DuplicateJobError:
        return False
    except RedisError as err:
        raise StoreUnavailableError("the job queue is unreachable; retry later") from err
    return True


def enqueue_handoffs(queue: Queue, handoffs: Iterable[tuple[str, str, str]]) -> None:
    """Enqueue the follow-up of each (sid, noticeId, entry id); one whose job exists
    already is skipped (unique job ids).

    Raises:
        StoreUnavailableError: Redis did not accept a job.
    """
    for sid, notice_id, entry_id in handoffs:
        enqueue_callback(queue, sid, notice_id, entry_id)


def reconcile_job_id(sid: str, due_ms: int) -> str:
    """One scheduled check per session and deadline (immediate runs get random ids)."""
    digest = hashlib.sha256(sid.encode()).hexdigest()[:32]
    return f"reconcile-{digest}-{due_ms}"


def enqueue_reconcile(queue: Queue, sid: str) -> None:
    """Reconcile the session now (the app told us about a start or a stop).

    Raises:
        StoreUnavailableError: Redis did not accept the job.
    """
    try:
        queue.enqueue_call(
            RECONCILE_SESSION,
            args=(sid,),
            timeout=JOB_TIMEOUT_S,
            retry=JOB_RETRY,
            description=f"reconcile {sid}",
            result_ttl=60,
        )
    except RedisError as err:
        raise StoreUnavailableError("the job queue is unreachable; retry later") from err
