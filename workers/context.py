"""What every job needs (settings, stores, queue, storage verifier, alert sinks), built once
per worker process from the environment and the job's Redis connection."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta

from redis import Redis, RedisCluster
from rq import Queue, get_current_job

from webhook.agora_client import AgoraClient, CallRecord
from webhook.config import Settings
from webhook.errors import PayloadError
from webhook.events import FILE_LIST_EVENTS
from webhook.jobs import callback_queue
from webhook.recordings import RecordingFacts
from webhook.schemas import load_callback
from webhook.store import CallbackStore, SessionSummary, now_ms
from webhook.store.alerts import AlertStore
from webhook.store.connections import connect_cluster
from webhook.store.recordings import RecordingStore
from webhook.store.worker_counters import WorkerCounters
from workers.lifecycle import Deadlines, Verification, file_names
from workers.storage import StorageConfig, StorageConfigError, StorageLocation, StorageVerifier


@dataclass(frozen=True)
class WorkerContext:
    settings: Settings
    redis: Redis
    callbacks: CallbackStore
    recordings: RecordingStore
    alerts: AlertStore
    queue: Queue
    counters: WorkerCounters

    def verify_storage(self, facts: RecordingFacts, summary: SessionSummary | None) -> Verification:
        """Look for the session's files in the customer's bucket."""
        names = self.files_to_verify(facts, summary)
        if facts.start is None:
            return Verification(
                False, reason="the app did not forward its start call, so the bucket is unknown"
            )
        if not names:
            return Verification(False, reason="Agora gave no file list (callbacks or stop)")
        bucket = facts.start.storage.get("bucket")
        if not self.settings.storage_config_path:
            return Verification(
                False, reason=f"STORAGE_CONFIG is not set: no credentials for bucket {bucket!r}"
            )
        try:
            location = StorageLocation.from_storage_config(facts.start.storage)
        except ValueError as err:
            return Verification(False, reason=f"the start call's storageConfig is unusable: {err}")
        try:
            verifier = storage_verifier(
                self.settings.storage_config_path,
                self.settings.storage_read_timeout.total_seconds(),
            )
        except StorageConfigError as err:
            # Not cached: the next check reads the file again, so fixing it is enough.
            return Verification(False, reason=f"STORAGE_CONFIG is unusable: {err.message}")
        result = verifier.verify(location, names)
        return Verification(result.verified, result.checked, result.missing, result.reason)

    def files_to_verify(
        self, facts: RecordingFacts, summary: SessionSummary | None
    ) -> tuple[str, ...]:
        """Every file an upload callback or the stop answer named, once each.

        The summary keeps the latest list only, and an uploaded (31) sent after a backuped
        (32), by the recorder that took over after a failover say, names its own files
        while the backed-up ones must reach the bucket too."""
        names = dict.fromkeys(file_names(facts, summary))
        names.update(dict.fromkeys(self.files_named_by_callbacks(facts.sid)))
        if facts.stop is not None:
            names.update(dict.fromkeys(facts.stop.file_names))
        return tuple(names)

    def files_named_by_callbacks(self, sid: str) -> tuple[str, ...]:
        """Every file any stored upload callback of the session named, once each, in the
        order of its log (the summary keeps only the latest list)."""
        names: dict[str, None] = {}
        for event in self.callbacks.events(sid):
            if event.event_type not in FILE_LIST_EVENTS or event.redundant_of:
                continue
            try:
                files = load_callback(event.document).files
            except PayloadError:  # pragma: no cover - it was loaded once to be stored
                continue
            names.update(dict.fromkeys(f.file_name for f in files or ()))
        return tuple(names)

    @property
    def agora(self) -> AgoraClient | None:
        """Our client for Agora's REST API, when credentials are configured."""
        if not self.settings.polls_agora:
            return None
        return agora_client(self.settings, self.redis)

    @property
    def deadlines(self) -> Deadlines:
        s = self.settings
        return Deadlines(
            backup=s.backup_deadline,
            upload_status=s.upload_status_deadline,
            recorder_start=s.recorder_start_deadline,
            stale_margin=s.stale_margin,
            backup_recheck=s.backup_recheck,
            poll=s.query_interval,
            migration=s.migration_grace,
            give_up=s.retention,
        )


def build_context(settings: Settings, redis: Redis) -> WorkerContext:
    store = event_store_client(settings.store_cluster_url) if settings.store_cluster_url else redis
    return WorkerContext(
        settings=settings,
        redis=redis,
        callbacks=CallbackStore(
            store, retention=settings.retention, dedupe_window=settings.dedupe_window
        ),
        recordings=RecordingStore(redis, retention=settings.retention),
        alerts=AlertStore(redis, retention=settings.retention),
        queue=callback_queue(redis, settings.queue_name),
        counters=WorkerCounters(redis),
    )


@functools.cache
def event_store_client(url: str) -> RedisCluster:
    """One Redis Cluster client per worker process (it keeps the slot map and a pool per
    node), for the event store when STORE_CLUSTER_URL is set."""
    return connect_cluster(url, timeout=timedelta(seconds=5))


@functools.cache
def agora_client(settings: Settings, redis: Redis) -> AgoraClient:
    """One client (and its connection pool) per worker process; every call it makes is
    recorded on its session's call log."""
    recordings = RecordingStore(redis, retention=settings.retention)

    def record(call: CallRecord) -> None:
        if call.sid:
            recordings.record_call(call.sid, call.endpoint, now_ms(), {
                "path": call.path, "http_status": call.http_status, "attempt": call.attempt,
                "duration_ms": round(call.duration_ms, 1), "response": call.response,
                "error": call.error,
            })  # fmt: skip

    return AgoraClient(
        settings.agora_api_base,
        settings.agora_app_id,
        settings.agora_customer_id,
        settings.agora_customer_secret,
        # Polling is a background check: a short timeout, and no long backoff in a job.
        timeout_s=5.0,
        max_attempts=2,
        backoff_s=(1.0,),
        on_call=record,
    )


@functools.cache
def storage_verifier(config_path: str, read_timeout_s: float) -> StorageVerifier:
    # One verifier (and its boto3 clients) per process and configuration.
    return StorageVerifier(StorageConfig.from_file(config_path), read_timeout_s=read_timeout_s)


_configured: list[Settings] = []


def configure(settings: Settings) -> None:
    """The settings jobs run with: `python -m workers` passes the ones it parsed (tests
    pass their own); otherwise the first job reads them from the environment."""
    _configured[:] = [settings]


def _settings() -> Settings:
    if not _configured:
        configure(Settings.from_env())
    return _configured[0]


def current_context() -> WorkerContext:
    """The context for the job being run."""
    job = get_current_job()
    if job is None:  # pragma: no cover - RQ always runs jobs with a current job
        raise RuntimeError("current_context() must be called inside an RQ job")
    return build_context(_settings(), job.connection)
