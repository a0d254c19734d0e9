"""Alert vocabulary: what an alert is, its kinds and severities. No I/O here."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Literal

Severity = Literal["critical", "warning", "info"]
AlertState = Literal["open", "acknowledged", "resolved"]
# Sinks are told about state transitions only: an alert raised, or resolved.
Transition = Literal["raised", "resolved"]

# kind -> default severity. One alert per (sid, kind).
KINDS: Mapping[str, Severity] = {
    "backup_not_uploaded": "critical",
    "upload_status_unknown": "critical",
    "nothing_recorded": "warning",
    "recorder_not_started": "critical",
    "recording_error": "critical",
    "upload_warning": "warning",
    "download_failed": "critical",
    "failover": "warning",
    "stale_session": "warning",
    "upload_failed": "critical",
    "file_list_mismatch": "warning",
    "upload_unconfirmed": "critical",
}


# An alert of a kind may be raised at another severity than its default (an Agora error
# of debug level is info); the most severe raise of an episode decides it.
SEVERITY_RANK: Mapping[Severity, int] = {"info": 0, "warning": 1, "critical": 2}


def alert_id(sid: str, kind: str) -> str:
    """Stable id of the one alert of this kind for this session (URL-safe)."""
    return "al_" + hashlib.sha256(f"{sid}\n{kind}".encode()).hexdigest()[:24]


@dataclass(frozen=True)
class Alert:
    """An operator-facing problem with one recording session."""

    id: str
    sid: str
    cname: str | None
    kind: str
    severity: Severity
    message: str
    state: AlertState
    raised_ms: int
    updated_ms: int
    evidence: Mapping[str, Any] = field(default_factory=dict)
    acknowledged_ms: int | None = None
    resolved_ms: int | None = None
    # Transitions whose deliveries are not queued yet, oldest first (AlertStore).
    unannounced: tuple[Transition, ...] = ()

    def as_of(self, transition: Transition) -> Alert:
        """The alert as it stood when that transition happened: what a delivery of it says,
        however the alert has moved since (acknowledged, or resolved before a raised
        transition was announced)."""
        if transition == "resolved":
            return self
        return replace(self, state="open", updated_ms=self.raised_ms,
                       acknowledged_ms=None, resolved_ms=None)  # fmt: skip

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> Alert:
        """The inverse of as_document()."""
        return cls(
            id=document["id"], sid=document["sid"], cname=document["cname"],
            kind=document["kind"], severity=document["severity"], message=document["message"],
            state=document["state"], raised_ms=document["raised_ms"],
            updated_ms=document["updated_ms"], evidence=document["evidence"],
            acknowledged_ms=document["acknowledged_ms"], resolved_ms=document["resolved_ms"],
        )  # fmt: skip

    def as_document(self) -> dict[str, Any]:
        """The JSON form sinks and the API send."""
        return {
            "id": self.id,
            "sid": self.sid,
            "cname": self.cname,
            "kind": self.kind,
            "severity": self.severity,
            "message": self.message,
            "state": self.state,
            "evidence": dict(self.evidence),
            "raised_ms": self.raised_ms,
            "updated_ms": self.updated_ms,
            "acknowledged_ms": self.acknowledged_ms,
            "resolved_ms": self.resolved_ms,
        }
