"""Typed accessors for what create_app() puts in app.extensions."""

from __future__ import annotations

from flask import current_app
from rq import Queue

from webhook.config import Settings
from webhook.store import CallbackStore
from webhook.store.alerts import AlertStore
from webhook.store.recordings import RecordingStore

SETTINGS = "agora.settings"
STORE = "agora.store"
QUEUE = "agora.queue"
RECORDINGS = "agora.recordings"
ALERTS = "agora.alerts"


def current_settings() -> Settings:
    settings: Settings = current_app.extensions[SETTINGS]
    return settings


def current_store() -> CallbackStore:
    store: CallbackStore = current_app.extensions[STORE]
    return store


def current_queue() -> Queue:
    queue: Queue = current_app.extensions[QUEUE]
    return queue


def current_recordings() -> RecordingStore:
    recordings: RecordingStore = current_app.extensions[RECORDINGS]
    return recordings


def current_alerts() -> AlertStore:
    alerts: AlertStore = current_app.extensions[ALERTS]
    return alerts
