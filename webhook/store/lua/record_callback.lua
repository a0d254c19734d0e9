-- Record one Agora callback in one atomic step: dedupe on noticeId, flag redundant copies,
-- append to the session's log, update its summary and the indexes.
-- Atomicity is the point: concurrent duplicates are stored once, and a crash can never
-- leave a log entry without its dedupe marker. KEYS and ARGV: see RecordScript in
-- webhook/store/callbacks.py, which builds them.

local events, session, notices, seqs = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local by_activity, by_cname, stats, pending, version_key =
  KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9]

local nid, etype, seq, uid, cname, sendts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local recv_raw, body, errors, known, follow_up = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local progress, upload, upload_ok, files, files_event = ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16]
local retention, notices_ttl = tonumber(ARGV[17]), tonumber(ARGV[18])
local seq_limit, maxlen, member, sid, version =
  tonumber(ARGV[19]), ARGV[20], ARGV[21], ARGV[22], ARGV[23]
local recv = tonumber(recv_raw)

redis.call('SET', version_key, version)

-- 1. The same noticeId again: Agora's resend. Count it, change nothing else.
if redis.call('HEXISTS', notices, nid) == 1 then
  redis.call('HINCRBY', stats, 'duplicate', 1)
  if redis.call('EXISTS', session) == 1 then
    redis.call('HINCRBY', session, 'duplicates', 1)
  end
  -- A follow-up job that has not finished is handed off again (our earlier answer may
  -- have been a 503 because the enqueue failed after the write).
  local still_pending = 0
  if redis.call('ZSCORE', pending, member) then still_pending = 1 end
  return {'duplicate', still_pending, ''}
end

-- 2. A new noticeId for an event we already have: the "redundant notification" copy.
local identity = ''
local first = false
if seq ~= '' then
  identity = 'id:' .. etype .. ':' .. seq .. ':' .. uid
  first = redis.call('HGET', notices, identity)
end

local entry = redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*',
  'nid', nid, 'type', etype, 'seq', seq, 'sendts', sendts, 'recv', recv_raw,
  'errors', errors, 'redundant_of', first or '', 'body', body)
redis.call('HSET', notices, nid, entry)
redis.call('EXPIRE', events, retention)
redis.call('EXPIRE', notices, notices_ttl)

if first then
  redis.call('HINCRBY', session, 'redundant', 1)
  redis.call('EXPIRE', session, retention)
  redis.call('HINCRBY', stats, 'redundant', 1)
  return {'redundant', 0, first}
end
if identity ~= '' then
  redis.call('HSET', notices, identity, nid)
end

-- 3. The summary. Every field is a min, a max, a count or "the value of the latest event by
-- (sendts, sequence, noticeId)", so any arrival order gives the same summary.
local ts = tonumber(sendts) or -1
local sq = tonumber(seq) or -1

local function is_before(ts_a, sq_a, nid_a, ts_b, sq_b, nid_b)
  if ts_a ~= ts_b then return ts_a < ts_b end
  if sq_a ~= sq_b then return sq_a < sq_b end
  return nid_a < nid_b
end

local function is_latest(prefix)
  local cur = redis.call('HMGET', session, prefix .. '_ts', prefix .. '_seq', prefix .. '_nid')
  if not cur[1] then return true end
  return is_before(tonumber(cur[1]), tonumber(cur[2]), cur[3], ts, sq, nid)
end

local function is_earliest(prefix)
  local cur = redis.call('HMGET', session, prefix .. '_ts', prefix .. '_seq', prefix .. '_nid')
  if not cur[1] then return true end
  return is_before(ts, sq, nid, tonumber(cur[1]), tonumber(cur[2]), cur[3])
end

local function mark(prefix)
  redis.call('HSET', session, prefix .. '_ts', ts, prefix .. '_seq', sq, prefix .. '_nid', nid)
end

if is_earliest('first') then
  mark('first')
  redis.call('HSET', session, 'sid', sid, 'cname', cname, 'uid', uid, 'first_event_ms', sendts)
end
if is_latest('last') then
  mark('last')
  redis.call('HSET', session, 'last_event_ms', sendts, 'last_event_type', etype)
end

local seen = redis.call('HMGET', session, 'first_seen_ms', 'last_seen_ms')
if not seen[1] or recv < tonumber(seen[1]) then
  redis.call('HSET', session, 'first_seen_ms', recv_raw)
end
if not seen[2] or recv > tonumber(seen[2]) then
  redis.call('HSET', session, 'last_seen_ms', recv_raw)
end

redis.call('HINCRBY', session, 'events', 1)
redis.call('HINCRBY', session, 'count:' .. etype, 1)
redis.call('HINCRBY', stats, 'stored', 1)
if errors ~= '' then
  redis.call('HINCRBY', session, 'invalid', 1)
  redis.call('HINCRBY', stats, 'invalid', 1)
end
if known == '0' then
  redis.call('HINCRBY', session, 'unknown_type', 1)
  redis.call('HINCRBY', stats, 'unknown_type', 1)
end

if progress ~= '' and is_latest('progress') then
  mark('progress')
  redis.call('HSET', session, 'upload_progress', progress)
end
if upload ~= '' and is_latest('upload') then
  mark('upload')
  redis.call('HSET', session, 'upload_status', upload, 'upload_ok', upload_ok)
end
if files ~= '' and is_latest('files') then
  mark('files')
  redis.call('HSET', session, 'files', files, 'files_event_type', files_event)
end

-- Sequence gaps: a bitmap of the sequences seen. Bounded, so a wild sequence number
-- cannot make Redis allocate hundreds of megabytes.
if sq >= 0 then
  if sq < seq_limit then
    redis.call('SETBIT', seqs, sq, 1)
    redis.call('EXPIRE', seqs, retention)
    local max_seq = tonumber(redis.call('HGET', session, 'max_sequence') or '-1')
    if sq > max_seq then
      max_seq = sq
      redis.call('HSET', session, 'max_sequence', sq)
    end
    local gaps = max_seq + 1 - redis.call('BITCOUNT', seqs)
    redis.call('HSET', session, 'sequence_gaps', gaps)
  else
    redis.call('HINCRBY', session, 'sequence_beyond_limit', 1)
  end
end
redis.call('EXPIRE', session, retention)

-- 4. Indexes for dashboards, trimmed to the retention period as we go.
local oldest = recv - retention * 1000
redis.call('ZADD', by_activity, 'GT', recv, sid)
redis.call('ZREMRANGEBYSCORE', by_activity, '-inf', '(' .. oldest)
if cname ~= '' then
  redis.call('ZADD', by_cname, 'GT', recv, sid)
  redis.call('ZREMRANGEBYSCORE', by_cname, '-inf', '(' .. oldest)
  redis.call('EXPIRE', by_cname, retention)
end

-- 5. Hand-off: remembered until the worker's job confirms it, so a lost enqueue is redone.
if follow_up == '1' then
  redis.call('ZADD', pending, 'NX', recv, member)
  return {'stored', 1, ''}
end
return {'stored', 0, ''}
