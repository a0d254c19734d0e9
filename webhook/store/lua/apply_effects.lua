-- Redis Cluster only: the global writes of one recorded callback (see record_callback.lua,
-- whose "effects" these are), in one atomic step in the sid's shard: every key here
-- carries the shard's hash tag {g<n>}. All of them are idempotent but the counters.
local by_activity, by_cname, stats, minute, pending = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local ready = KEYS[6]
local sid, cname, recv = ARGV[1], ARGV[2], ARGV[3]
local retention, minute_ttl = tonumber(ARGV[4]), tonumber(ARGV[5])

for i = 6, #ARGV, 2 do
  local kind, value = ARGV[i], ARGV[i + 1]
  if kind == 'count' then
    redis.call('HINCRBY', stats, value, 1)
    if redis.call('HINCRBY', minute, value, 1) == 1 then
      redis.call('EXPIRE', minute, minute_ttl)
    end
  elseif kind == 'activity' then
    redis.call('ZADD', by_activity, 'GT', value, sid)
    if cname ~= '' and redis.call('ZADD', by_cname, 'GT', value, sid) == 1 then
      redis.call('EXPIRE', by_cname, retention)
    end
  elseif kind == 'trim' then
    redis.call('ZREMRANGEBYSCORE', by_activity, '-inf', value)
    if cname ~= '' then
      redis.call('ZREMRANGEBYSCORE', by_cname, '-inf', value)
      redis.call('EXPIRE', by_cname, retention)
    end
  elseif kind == 'pending' then
    redis.call('ZADD', pending, 'NX', recv, value)
    redis.call('RPUSH', ready, value)
  end
end
return #ARGV
