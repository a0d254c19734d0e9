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


# The record script returns what a first delivery returns and writes nothing.
_NOOP_LUA = "return {'stored', 0, '', '0-1', {}}"
# The same after a pure-CPU loop in Redis (~50 µs here under load).
_SPIN_LUA = "local x = 0 for i = 1, 16000 do x = x + i end " + _NOOP_LUA


# KEYS and ARGV as record_callback.lua gets them (see CallbackStore.record).
_COMMANDS_ONLY_LUA = """
local identity = 'e ' .. ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4]
redis.call('HGET', KEYS[3], identity)
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000, '*', 'nid', ARGV[1],
  'type', ARGV[2], 'seq', ARGV[3], 'sendts', ARGV[6], 'recv', ARGV[7], 'errors', ARGV[9],
  'redundant_of', '', 'body', ARGV[8])
redis.call('HSET', KEYS[3], identity, ARGV[1] .. ' ' .. id)
redis.call('HMGET', KEYS[2], 'first', 'last', 'first_seen_ms', 'last_seen_ms', 'events',
  'count:' .. ARGV[2], 'invalid', 'unknown_type', 'progress_at', 'upload_at', 'files_at',
  'max_sequence', 'distinct_sequences', 'refreshed_ms')
if ARGV[3] ~= '' then redis.call('SETBIT', KEYS[4], ARGV[3], 1) end
redis.call('ZADD', KEYS[7], 'GT', ARGV[7], ARGV[17])
redis.call('ZADD', KEYS[8], 'GT', ARGV[7], ARGV[17])
redis.call('HSET', KEYS[2], 'sid', ARGV[17], 'last', ARGV[6], 'last_event_ms', ARGV[6],
  'last_event_type', ARGV[2], 'last_seen_ms', ARGV[7], 'events', ARGV[3],
  'count:' .. ARGV[2], ARGV[3], 'max_sequence', ARGV[3], 'distinct_sequences', ARGV[3],
  'sequence_gaps', '0', 'upload_progress', ARGV[12])
redis.call('HINCRBY', KEYS[9], 'stored', 1)
redis.call('HINCRBY', KEYS[11], 'stored', 1)
return {'stored', 0, '', id, {}}
"""

_DEDUPE_LOG_LUA = """
if redis.call('HSETNX', KEYS[3], ARGV[1], '') == 0 then return {'duplicate', 0, '', '', {}} end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000, '*', 'nid', ARGV[1],
  'type', ARGV[2], 'seq', ARGV[3], 'sendts', ARGV[6], 'recv', ARGV[7], 'errors', ARGV[9],
  'redundant_of', '', 'body', ARGV[8])
return {'stored', 0, '', id, {}}
"""


class SetOnlyStore(CallbackStore):
    def record(self, callback: Callback, raw_body: bytes, *, received_ms: int) -> RecordResult:
        self.redis.set(f"variant:{uuid.uuid4().hex}", raw_body)
        return RecordResult(outcome="stored", needs_handoff=False, entry_id="0-1")


def _with_script(script: str) -> Flask:
    """The service, its record script replaced by script (same KEYS and ARGV)."""

    class ScriptStore(CallbackStore):
        def _record_script(self) -> str:
            return script

    return _with_store(ScriptStore)


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
    "noop_script": lambda: _with_script(_NOOP_LUA),
    "spin_script": lambda: _with_script(_SPIN_LUA),
    "commands_only": lambda: _with_script(_COMMANDS_ONLY_LUA),
    "dedupe_log": lambda: _with_script(_DEDUPE_LOG_LUA),
    "set": lambda: _with_store(SetOnlyStore),
    "minimal": _minimal,
}[VARIANT]()
