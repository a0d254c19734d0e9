"""The record scripts that bench/variants.py swaps into the service, with the same KEYS and
ARGV as webhook/store/lua/record_callback.lua; bench/instructions.py counts what each costs
Redis. None of them keeps what the service promises.
"""

from __future__ import annotations

from webhook.store import CallbackStore

# The record script returns what a first delivery returns and writes nothing.
NOOP_LUA = "return {'stored', 0, '', '0-1', {}}"
# The same after a pure-CPU loop in Redis (~50 µs here under load).
SPIN_LUA = "local x = 0 for i = 1, 16000 do x = x + i end " + NOOP_LUA


# KEYS and ARGV as record_callback.lua gets them (see CallbackStore.record).
COMMANDS_ONLY_LUA = """
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

DEDUPE_LOG_LUA = """
if redis.call('HSETNX', KEYS[3], ARGV[1], '') == 0 then return {'duplicate', 0, '', '', {}} end
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', 1000, '*', 'nid', ARGV[1],
  'type', ARGV[2], 'seq', ARGV[3], 'sendts', ARGV[6], 'recv', ARGV[7], 'errors', ARGV[9],
  'redundant_of', '', 'body', ARGV[8])
return {'stored', 0, '', id, {}}
"""


def store_with_script(script: str) -> type[CallbackStore]:
    """CallbackStore with its record script replaced by script."""

    class ScriptStore(CallbackStore):
        def _record_script(self) -> str:
            return script

    return ScriptStore
