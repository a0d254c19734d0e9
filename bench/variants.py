"""The service with one part swapped out, for `make bench`'s --breakdown: where its CPU goes.

BENCH_VARIANT picks one. Each is the real app from create_app(), production settings, except:
- noop_script: the record script is replaced by one with the same keys and arguments
  that writes nothing (the client's work and the EVALSHA stay, Redis does nothing);
- spin_script: the same, but Redis first spins in Lua for about as long as the real
  script runs there (no command, no write): it shows what the round trip's duration
  alone costs the web processes on a machine whose cores they share with Redis;
- commands_only: a record script that makes the real one's ten Redis calls for a new
  event (same keys, same sizes) with none of its Lua logic: the least the current key
  schema costs in Redis, whatever the script's code;
- dedupe_log: a record script that only dedupes on noticeId (HSETNX) and appends the body
  to the session's log (XADD): the least a receiver that keeps each noticeId once in a
  per-session log does, without a summary, indexes or counters;
- set: the store's record() is replaced by one SET of the body, as the floor does;
- minimal: not the service at all, for scale: a bare Flask app that checks the
  signature, loads the body with the service's marshmallow schemas and makes one SET.
None of these keeps what the service promises; they exist only to be measured.
"""

from __future__ import annotations

import os
import uuid

from flask import Flask, Response, request
from redis import Redis

from bench.variant_scripts import (
    COMMANDS_ONLY_LUA,
    DEDUPE_LOG_LUA,
    NOOP_LUA,
    SPIN_LUA,
    store_with_script,
)
from webhook import extensions
from webhook.app import create_app
from webhook.config import Settings
from webhook.events import Callback
from webhook.intake import parse_json
from webhook.logconfig import configure_logging
from webhook.schemas import load_callback
from webhook.signature import HEADER_V1, HEADER_V2, verify
from webhook.store import CallbackStore, RecordResult

_OK = b'{"result":"stored"}'
_settings = Settings.from_env()
configure_logging(_settings.log_format, _settings.log_level)


class SetOnlyStore(CallbackStore):
    def record(self, callback: Callback, raw_body: bytes, *, received_ms: int) -> RecordResult:
        self.redis.set(f"variant:{uuid.uuid4().hex}", raw_body)
        return RecordResult(outcome="stored", needs_handoff=False, entry_id="0-1")


def _with_script(script: str) -> Flask:
    """The service, its record script replaced by script (same KEYS and ARGV)."""
    return _with_store(store_with_script(script))


def _with_store(store_class: type[CallbackStore]) -> Flask:
    app = create_app(_settings)
    store: CallbackStore = app.extensions[extensions.STORE]
    app.extensions[extensions.STORE] = store_class(store.redis, retention=_settings.retention)
    return app


def _minimal() -> Flask:
    app = Flask("minimal")
    client = Redis.from_url(_settings.redis_url)

    @app.post("/agora/callback")
    def callback() -> Response:
        body = request.get_data()
        verify(
            body,
            signature_v2=request.headers.get(HEADER_V2),
            signature_v1=request.headers.get(HEADER_V1),
            secrets=_settings.callback_secrets,
        )
        load_callback(parse_json(body))
        client.set(f"variant:{uuid.uuid4().hex}", body)
        return Response(_OK, status=200, mimetype="application/json")

    return app


VARIANT = os.environ.get("BENCH_VARIANT", "")
app: Flask = {
    "noop_script": lambda: _with_script(NOOP_LUA),
    "spin_script": lambda: _with_script(SPIN_LUA),
    "commands_only": lambda: _with_script(COMMANDS_ONLY_LUA),
    "dedupe_log": lambda: _with_script(DEDUPE_LOG_LUA),
    "set": lambda: _with_store(SetOnlyStore),
    "minimal": _minimal,
}[VARIANT]()
