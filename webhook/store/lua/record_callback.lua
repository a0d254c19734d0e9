-- Record one Agora callback in one atomic step: dedupe (noticeId within the event's
-- identity; a noticeId names one notification, so its resends carry the same identity),
-- flag redundant copies,
-- append to the session's log, update its summary and the indexes.
-- Atomicity is the point: concurrent duplicates are stored once, and a crash can never
-- leave a log entry without its dedupe marker. KEYS and ARGV: see CallbackStore.record()
-- in webhook/store/callbacks.py, which builds them. This runs on every callback, so it
-- keeps to about ten Redis calls: one HMGET and one HSET for the whole summary.

local events, session, notices, seqs, files_key = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
-- pending: the global hand-off set on one primary; on Cluster the session's own copy.
local pending = KEYS[6]
-- The global keys, on one primary only. On Redis Cluster (cluster = 1, a constant like
-- the settings below) they live in other slots: the script leaves them alone and returns
-- the writes they need as "effects", which CallbackStore applies in the sid's shard.
local by_activity, by_cname, stats, version_key, minute = KEYS[7], KEYS[8], KEYS[9], KEYS[10], KEYS[11]
-- ready: the relay's list of hand-offs to enqueue (one primary only; the effects on Cluster).
local ready = KEYS[12]
local effects = {}
local function effect(kind, value)
  effects[#effects + 1] = kind
  effects[#effects + 1] = value
end

local nid, etype, seq, uid, cname, sendts = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local recv_raw, body, errors, known, follow_up = ARGV[7], ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local progress, upload, upload_ok, files, files_event = ARGV[12], ARGV[13], ARGV[14], ARGV[15], ARGV[16]
local sid = ARGV[17]
-- The store's settings (retention, notices_ttl, refresh_ms, seq_limit, maxlen, version)
-- are constants written above this line when the script is loaded: fewer arguments to
-- pack and parse on every callback.
local recv = tonumber(recv_raw)

-- Every outcome is counted twice: in the all-time totals and in the arrival minute's
-- counters that the dashboard draws (kept minute_ttl seconds).
local function count(outcome)
  if cluster == 1 then return effect('count', outcome) end
  redis.call('HINCRBY', stats, outcome, 1)
  -- The minute's key gets its TTL with its first count of each outcome, not on every
  -- callback: one write fewer to apply and to append to the AOF.
  if redis.call('HINCRBY', minute, outcome, 1) == 1 then
    redis.call('EXPIRE', minute, minute_ttl)
  end
end

local function pending_member(entry)
  return sid .. ' ' .. nid .. ' ' .. entry
end

-- Queue a hand-off for the workers' relay, which enqueues its job. On Cluster the global
-- pending entry and the shard's ready list are written after this script (an effect).
local function queue_for_relay(member)
  if cluster == 1 then
    effect('pending', member)
  else
    redis.call('RPUSH', ready, member)
  end
end

local function duplicate(entry)
  count('duplicate')
  if redis.call('EXISTS', session) == 1 then
    redis.call('HINCRBY', session, 'duplicates', 1)
  end
  -- A follow-up job that has not finished is handed off again: our earlier answer may
  -- have been a 503 because the enqueue failed after the write.
  local still_pending = 0
  local member = pending_member(entry)
  if redis.call('ZSCORE', pending, member) then
    still_pending = 1
    queue_for_relay(member)
  end
  if cluster == 1 then
    -- The resend of a callback answered 503 because these global writes failed: redo the
    -- index entry (idempotent); only the lost "stored" count stays lost.
    local last = redis.call('HGET', session, 'last_seen_ms')
    if last then effect('activity', last) end
  end
  return {'duplicate', still_pending, '', entry, effects}
end

-- 1. Dedupe. An event is identified by (eventType, sequence, uid) within its sid: the field
-- holds "<noticeId> <entry id>" of the copy that counts. A different noticeId for the same
-- identity is Agora's "redundant notification" copy: logged, flagged, never counted. A
-- callback without a sequence (invalid) is identified by its noticeId alone.
local identity = nil
local first_nid, first_entry = nil, nil
if seq ~= '' then
  identity = 'e ' .. etype .. ' ' .. seq .. ' ' .. uid
  local held = redis.call('HGET', notices, identity)
  if held then
    first_nid, first_entry = string.match(held, '^(%S+) (%S+)$')
    if first_nid == nid then return duplicate(first_entry) end
  end
end
if not identity or first_nid then
  local entry = redis.call('HGET', notices, nid)
  if entry then return duplicate(entry) end
end

local entry = redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*',
  'nid', nid, 'type', etype, 'seq', seq, 'sendts', sendts, 'recv', recv_raw,
  'errors', errors, 'redundant_of', first_nid or '', 'body', body)

if first_nid then
  redis.call('HSET', notices, nid, entry)
  -- The log may have expired and been re-created by this copy: give it its TTL back.
  redis.call('EXPIRE', events, retention)
  -- A copy may come long after the session's last TTL push: its noticeId must still be
  -- remembered for the whole dedupe window (replays of it are answered "duplicate").
  redis.call('EXPIRE', notices, notices_ttl)
  if redis.call('EXISTS', session) == 1 then
    redis.call('HINCRBY', session, 'redundant', 1)
  end
  count('redundant')
  return {'redundant', 0, first_nid, entry, effects}
end
if identity then
  redis.call('HSET', notices, identity, nid .. ' ' .. entry)
else
  redis.call('HSET', notices, nid, entry)
end

-- 2. The summary: every field is a min, a max, a count, or "the value of the latest event
-- by (sendts, sequence, noticeId)", so any arrival order gives the same summary.
local F = {'first', 'last', 'first_seen_ms', 'last_seen_ms', 'events', 'count:' .. etype,
  'invalid', 'unknown_type', 'progress_at', 'upload_at', 'files_at', 'max_sequence',
  'distinct_sequences', 'refreshed_ms'}
local cur = redis.call('HMGET', session, unpack(F))
local first, last, first_seen, last_seen, n_events, n_type = cur[1], cur[2], cur[3], cur[4], cur[5], cur[6]
local n_invalid, n_unknown, progress_at, upload_at, files_at = cur[7], cur[8], cur[9], cur[10], cur[11]
local max_seq, distinct, refreshed = cur[12], cur[13], cur[14]

local ts = tonumber(sendts)
local sq = tonumber(seq) or -1
local set = {}
local n_set = 0
local function put(field, value)
  set[n_set + 1] = field
  set[n_set + 2] = value
  n_set = n_set + 2
end

-- Positions are "<sendts> <sequence> <noticeId>", built from the argument strings. An
-- event without sendts is never the earliest one and never the latest one.
local EARLY, LATE = '9007199254740991', '-1'
local seq_text = seq ~= '' and seq or '-1'
local early_pos = (sendts ~= '' and sendts or EARLY) .. ' ' .. seq_text .. ' ' .. nid
local late_pos = (sendts ~= '' and sendts or LATE) .. ' ' .. seq_text .. ' ' .. nid
local late_ts = ts or -1
local function is_before(a_ts, a_sq, a_nid, b_ts, b_sq, b_nid)
  if a_ts ~= b_ts then return a_ts < b_ts end
  if a_sq ~= b_sq then return a_sq < b_sq end
  return a_nid < b_nid
end
local function is_latest(at)
  if not at then return true end
  local t, s, n = string.match(at, '^(%S+) (%S+) (%S+)$')
  return is_before(tonumber(t), tonumber(s), n, late_ts, sq, nid)
end

local is_new_session = not first
if is_new_session then
  put('sid', sid)
  -- (On Cluster the store writes the version once when it starts.)
  if cluster == 0 then redis.call('SET', version_key, version) end
end
do
  local earliest = true
  if first then
    local t, s, n = string.match(first, '^(%S+) (%S+) (%S+)$')
    earliest = is_before(ts or tonumber(EARLY), sq, nid, tonumber(t), tonumber(s), n)
  end
  if earliest then
    put('first', early_pos)
    put('cname', cname)
    put('uid', uid)
    put('first_event_ms', sendts)
  end
end
if is_latest(last) then
  put('last', late_pos)
  put('last_event_ms', sendts)
  put('last_event_type', etype)
end
if not first_seen or recv < tonumber(first_seen) then put('first_seen_ms', recv_raw) end
if not last_seen or recv > tonumber(last_seen) then put('last_seen_ms', recv_raw) end
put('events', (tonumber(n_events) or 0) + 1)
put('count:' .. etype, (tonumber(n_type) or 0) + 1)
if errors ~= '' then
  put('invalid', (tonumber(n_invalid) or 0) + 1)
  count('invalid')
end
if known == '0' then
  put('unknown_type', (tonumber(n_unknown) or 0) + 1)
  count('unknown_type')
end
if progress ~= '' and is_latest(progress_at) then
  put('progress_at', late_pos)
  put('upload_progress', progress)
end
if upload ~= '' and is_latest(upload_at) then
  put('upload_at', late_pos)
  put('upload_status', upload)
  put('upload_ok', upload_ok)
end
if upload_ok == '0' then
  -- Every abnormal upload counts, not only the latest: after a failover one recorder's may
  -- fail and the next one's succeed, and the alert must not depend on which came first.
  redis.call('HINCRBY', session, 'upload_failures', 1)
end
if files ~= '' and is_latest(files_at) then
  -- Kept out of the summary hash: a long value would cost the hash its compact encoding.
  put('files_at', late_pos)
  put('files_event_type', files_event)
  redis.call('SET', files_key, files, 'EX', retention)
end

-- Sequence gaps: a bitmap of the sequences seen (SETBIT answers whether a bit was new).
-- Bounded, so a wild sequence number cannot make Redis allocate hundreds of megabytes.
if sq >= 0 then
  if sq < seq_limit then
    local distinct_n = tonumber(distinct) or 0
    if redis.call('SETBIT', seqs, sq, 1) == 0 then
      distinct_n = distinct_n + 1
      put('distinct_sequences', distinct_n)
    end
    if not distinct then
      -- The bitmap was created just now, maybe between two TTL refreshes.
      redis.call('EXPIRE', seqs, retention)
    end
    local max_n = math.max(tonumber(max_seq) or -1, sq)
    put('max_sequence', max_n)
    put('sequence_gaps', max_n + 1 - distinct_n)
  else
    redis.call('HINCRBY', session, 'sequence_beyond_limit', 1)
  end
end

-- 3. Indexes for dashboards.
if cluster == 1 then
  effect('activity', recv_raw)
else
  redis.call('ZADD', by_activity, 'GT', recv, sid)
  if cname ~= '' and redis.call('ZADD', by_cname, 'GT', recv, sid) == 1 then
    -- A new member, maybe of a new index key, between two TTL refreshes.
    redis.call('EXPIRE', by_cname, retention)
  end
end

-- 4. Retention. Refreshing TTLs and trimming indexes on every callback would double this
-- script's work; once per refresh interval per session is enough (a key then lives
-- between retention - interval and retention after its session's last event).
if not refreshed or recv - tonumber(refreshed) >= refresh_ms then
  put('refreshed_ms', recv_raw)
  for _, key in ipairs({events, session, seqs, files_key}) do
    redis.call('EXPIRE', key, retention)
  end
  redis.call('EXPIRE', notices, notices_ttl)
  local oldest = '(' .. (recv - retention * 1000)
  if cluster == 1 then
    effect('trim', oldest)
  else
    redis.call('ZREMRANGEBYSCORE', by_activity, '-inf', oldest)
    if cname ~= '' then
      redis.call('ZREMRANGEBYSCORE', by_cname, '-inf', oldest)
      redis.call('EXPIRE', by_cname, retention)
    end
  end
end
redis.call('HSET', session, unpack(set))
if is_new_session then
  -- The session hash did not exist when the TTLs above were set.
  redis.call('EXPIRE', session, retention)
end
count('stored')

-- 5. Hand-off: remembered until the worker's job confirms it, so a lost enqueue is redone
-- (the sweep), and queued for the workers' relay, which enqueues the job: the callback's
-- answer never waits for RQ.
if follow_up == '1' then
  local member = pending_member(entry)
  redis.call('ZADD', pending, 'NX', recv, member)
  queue_for_relay(member)
  return {'stored', 1, '', entry, effects}
end
return {'stored', 0, '', entry, effects}
