"""Redis persistence. keys.py spells every key; callbacks.py owns the event store."""

from webhook.store.callbacks import (
    CallbackStore,
    RecordResult,
    Rejection,
    SessionSummary,
    StoredEvent,
    now_ms,
)
from webhook.store.connections import connect

__all__ = [
    "CallbackStore",
    "RecordResult",
    "Rejection",
    "SessionSummary",
    "StoredEvent",
    "connect",
    "now_ms",
]
