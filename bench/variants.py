"""The service with one part swapped out, for `make bench`'s --breakdown: where its CPU goes.

BENCH_VARIANT picks one. Each is the real app from create_app(), production settings, except:
- noop_script: the record script is replaced by one with the same keys and arguments
  that writes nothing (the client's work and the EVALSHA stay, Redis does nothing);
- spin_script: the same, but Redis first spins in Lua for about as long as the real
  script runs there (no command, no write): it shows what the round trip's duration
  alone costs the web processes on a machine whose cores they share with Redis;
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


class NoopScriptStore(CallbackStore):
    """The record script returns what a first delivery returns and writes nothing."""

    def _record_script(self) -> str:
        return "return {'stored', 0, '', '0-1', {}}"


class SpinScriptStore(CallbackStore):
    """Like NoopScriptStore, after a pure-CPU loop in Redis (~50 µs here under load)."""

    def _record_script(self) -> str:
        return "local x = 0 for i = 1, 16000 do x = x + i end return {'stored', 0, '', '0-1', {}}"


class SetOnlyStore(CallbackStore):
    def record(self, callback: Callback, raw_body: bytes, *, received_ms: int) -> RecordResult:
        self.redis.set(f"variant:{uuid.uuid4().hex}", raw_body)
        return RecordResult(outcome="stored", needs_handoff=False, entry_id="0-1")


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
    "noop_script": lambda: _with_store(NoopScriptStore),
    "spin_script": lambda: _with_store(SpinScriptStore),
    "set": lambda: _with_store(SetOnlyStore),
    "minimal": _minimal,
}[VARIANT]()
