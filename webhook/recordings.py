"""What the app did with a recording (start, stop) and the lifecycle states we derive.

Vocabulary only: no I/O, no Flask. Agora's camelCase is read in webhook.schemas.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

Mode = Literal["individual", "mix", "web"]
UploadingStatus = Literal["uploaded", "backuped", "unknown"]

# started -> recording -> stopped -> uploaded | backuped -> verified, plus the ends that
# are not a clean upload.
State = Literal[
    "unknown",
    "started",
    "recording",
    "stopped",
    "uploaded",
    "backuped",
    "verified",
    "exited",
    "exited_idle",
    "nothing_recorded",
    "failed",
]
# States after which nothing more is expected from Agora; a backuped session stays active
# until its files are verified.
FINAL_STATES: frozenset[str] = frozenset(
    {"verified", "uploaded", "exited", "exited_idle", "nothing_recorded", "failed"}
)

# Agora's stop answers 206 with one of these codes (FACTS §6.3).
STOP_CODE_NOT_COMPLETED = 65
STOP_CODE_NOTHING_RECORDED = 435
# ...and 400 with this one when the task is already exiting (duplicate stop, recorder kicked
# out, maxIdleTime triggered).
STOP_CODE_INVALID_OPERATION = 49


@dataclass(frozen=True)
class StartCall:
    """The app's start: what Agora was asked to record, and where to put the files."""

    resource_id: str
    cname: str
    uid: str
    mode: Mode
    client_request: Mapping[str, Any]  # scrubbed of secrets
    started_ms: int

    @property
    def storage(self) -> Mapping[str, Any]:
        storage = self.client_request.get("storageConfig")
        return storage if isinstance(storage, Mapping) else {}

    @property
    def max_idle_s(self) -> int:
        """recordingConfig.maxIdleTime; Agora's default is 30 s."""
        config = self.client_request.get("recordingConfig")
        value = config.get("maxIdleTime") if isinstance(config, Mapping) else None
        return value if isinstance(value, int) and value > 0 else 30


@dataclass(frozen=True)
class StopCall:
    """The app's stop, as Agora answered it."""

    http_status: int
    code: int | None
    uploading_status: UploadingStatus | None
    file_names: tuple[str, ...]
    response: Mapping[str, Any]  # scrubbed of secrets
    stopped_ms: int

    @property
    def nothing_recorded(self) -> bool:
        return self.http_status == 206 and self.code == STOP_CODE_NOTHING_RECORDED

    @property
    def found_no_task(self) -> bool:
        """404 "failed to find worker" or 400 code 49: Agora had no running task to stop, it
        had ended or was exiting already (FACTS §6.3). Not a 404 "no Route matched", which
        is a wrong URL or app id."""
        if self.http_status == 400:
            return self.code == STOP_CODE_INVALID_OPERATION
        detail = self.response.get("reason") or self.response.get("message")
        wrong_route = isinstance(detail, str) and detail.lower().startswith("no route")
        return self.http_status == 404 and not wrong_route

    @property
    def upload_status_unknown(self) -> bool:
        """206 (not 435) or uploadingStatus "unknown": Agora could not say where files went."""
        if self.nothing_recorded:
            return False
        return self.http_status == 206 or self.uploading_status in (None, "unknown")


@dataclass(frozen=True)
class RecordingFacts:
    """Everything reconciliation knows about a session besides its callbacks."""

    sid: str
    start: StartCall | None = None
    stop: StopCall | None = None
    state: State = "unknown"
    state_ms: int | None = None
    # First moment we knew the upload went to Agora's backup (callback or stop answer).
    backuped_ms: int | None = None
    verified_ms: int | None = None
    verification: Mapping[str, Any] = field(default_factory=dict)
    storage_checks: int = 0
    # Our last `query` to Agora for this session: when, and its HTTP status (404: Agora no
    # longer runs the task).
    last_query_ms: int | None = None
    last_query_http_status: int | None = None
    # Agora's failover event: 404s are expected for up to 90 s after it.
    failover_ms: int | None = None
    # The first of the query answers in a row saying the task is gone (404 "failed to find
    # worker"); None once one answers 200.
    task_gone_ms: int | None = None
