//! The Lua scripts that keep a partition's stream and bookkeeping consistent. Each runs
//! atomically in Redis, so a collector killed at any instant leaves a partition either before or
//! after an operation, never in between.
//!
//! A partition is three keys sharing one hash tag: the stream `s` of encoded chunks, the hash `m`
//! of sequence numbers, and the lease `l`. Samples are numbered from 1 in push order; a chunk's
//! stream id is `<first sequence>-<sample count>`, so ranges are plain id arithmetic and no chunk
//! has to be decoded in Redis. The hash holds `head` (first sample still held), `flight` (end of
//! the batch in flight; equal to `head` when none), `gap` (end of the samples dropped for room
//! right after the batch in flight), `tail` (next sequence) and `dropped` (total dropped):
//!
//! ```text
//!   head        flight        gap                    tail
//!    | in flight  | dropped     | queued               |
//! ```

use redis::Script;

/// Shared helpers, prepended to the scripts that need them.
const PRELUDE: &str = r#"
local function meta(key)
  local m = redis.call('HMGET', key, 'head', 'flight', 'gap', 'tail')
  local head = tonumber(m[1]) or 1
  local flight = tonumber(m[2]) or head
  local gap = tonumber(m[3]) or flight
  local tail = tonumber(m[4]) or gap
  return head, flight, gap, tail
end
-- Samples held: in flight or queued, not those dropped behind the batch in flight.
local function held(head, flight, gap, tail)
  return (tail - head) - (gap - flight)
end
local function span(id)
  local dash = string.find(id, '-', 1, true)
  return tonumber(string.sub(id, 1, dash - 1)), tonumber(string.sub(id, dash + 1))
end
-- Removes every chunk that ends at or before sequence x.
local function trim_before(stream, x)
  local minid = string.format('%d-0', x)
  local last = redis.call('XREVRANGE', stream, string.format('%d', x), '-', 'COUNT', 1)
  if #last > 0 then
    local s, n = span(last[1][1])
    if s + n > x then minid = last[1][1] end
  end
  redis.call('XTRIM', stream, 'MINID', minid)
end
"#;

/// KEYS: stream, meta. ARGV: sample count, partition limit, chunk.
/// Appends a chunk, then drops the oldest queued samples beyond the limit (never the batch in
/// flight). Returns `{dropped, held}`.
const PUSH: &str = r#"
local n = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local head, flight, gap, tail = meta(KEYS[2])
redis.call('XADD', KEYS[1], string.format('%d-%d', tail, n), 'd', ARGV[3])
tail = tail + n
local dropped = 0
local room = limit - (flight - head)
if room < 0 then room = 0 end
if tail - gap > room then
  dropped = tail - gap - room
  gap = gap + dropped
  if flight == head then
    head = gap
    flight = gap
    trim_before(KEYS[1], head)
  else
    -- Chunks wholly inside the dropped range go now; a chunk shared with the batch in flight or
    -- with queued samples stays until the ack moves past it.
    local entries = redis.call('XRANGE', KEYS[1], string.format('%d', flight), string.format('%d', gap - 1))
    for _, e in ipairs(entries) do
      local s, c = span(e[1])
      if s + c <= gap then redis.call('XDEL', KEYS[1], e[1]) end
    end
  end
  redis.call('HINCRBY', KEYS[2], 'dropped', dropped)
end
redis.call('HSET', KEYS[2], 'head', head, 'flight', flight, 'gap', gap, 'tail', tail)
return {dropped, held(head, flight, gap, tail)}
"#;

/// KEYS: meta, lease. ARGV: token, max samples.
/// Returns the batch in flight, or makes the oldest `max` samples the batch in flight:
/// `{-1}` lease lost, `{0}` empty, or `{1, head, flight, held}`. The chunks of `[head, flight)`
/// are then read by the client straight from the stream: a chunk passing through Lua costs
/// Redis more than the rest of the script (measured, see docs/redis-buffer.md).
const BATCH: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return {-1} end
local head, flight, gap, tail = meta(KEYS[1])
if flight == head then
  if head == tail then return {0} end
  flight = math.min(head + tonumber(ARGV[2]), tail)
  gap = flight
  redis.call('HSET', KEYS[1], 'head', head, 'flight', flight, 'gap', gap, 'tail', tail)
end
return {1, head, flight, held(head, flight, gap, tail)}
"#;

/// KEYS: stream, meta, lease. ARGV: token, end of the batch, trim hint.
/// Removes the batch in flight and the samples dropped behind it. The hint is the id of the
/// chunk holding the new head as the client read it (or `<end>-0`), so trimming needs no chunk
/// in Lua; when samples were dropped behind the batch the new head lies elsewhere and is looked
/// up. Returns the samples held after, `-1` when the lease is lost, `-2` when that batch is not
/// in flight.
const ACK: &str = r#"
if redis.call('GET', KEYS[3]) ~= ARGV[1] then return -1 end
local head, flight, gap, tail = meta(KEYS[2])
if flight == head or flight ~= tonumber(ARGV[2]) then return -2 end
local dropped_behind = gap > flight
head = gap
flight = gap
redis.call('HSET', KEYS[2], 'head', head, 'flight', flight, 'gap', gap, 'tail', tail)
if dropped_behind or ARGV[3] == '' then
  trim_before(KEYS[1], head)
else
  redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
end
return tail - head
"#;

/// KEYS: lease. ARGV: token, lease milliseconds. Extends the lease if still ours: 1, else 0.
const RENEW: &str = r#"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// KEYS: meta, lease. ARGV: token, force ("1" also releases a partition with a batch in flight).
/// Gives the lease up if ours: 1, else 0.
const RELEASE: &str = r#"
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
if ARGV[2] ~= '1' then
  local m = redis.call('HMGET', KEYS[1], 'head', 'flight')
  if tonumber(m[1]) ~= tonumber(m[2]) then return 0 end
end
redis.call('DEL', KEYS[2])
return 1
"#;

/// Redis' clock in milliseconds, prepended to the scripts of the member set: collectors'
/// clocks never matter.
const CLOCK: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"#;

/// KEYS: members. ARGV: token, lease milliseconds.
/// Records this instance as live until now + lease, forgets expired ones, returns how many are
/// live.
const HEARTBEAT: &str = r#"
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('(%d', now))
redis.call('ZADD', KEYS[1], now + lease, ARGV[1])
redis.call('PEXPIRE', KEYS[1], lease * 3)
return redis.call('ZCARD', KEYS[1])
"#;

/// KEYS: members. Live instances in a member set (scored by their expiry).
const LIVE_MEMBERS: &str = r#"
return redis.call('ZCOUNT', KEYS[1], string.format('(%d', now), '+inf')
"#;

/// KEYS: stream, meta, lease. ARGV: the tail seen when the partition was judged orphaned.
/// Deletes the partition of an orphaned queue (`orphans.rs`) unless it is leased or was pushed
/// to since; returns the samples it held (in flight or queued), or -1 when it was left alone.
const DISCARD: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 1 then return -1 end
local head, flight, gap, tail = meta(KEYS[2])
if tail ~= tonumber(ARGV[1]) then return -1 end
redis.call('DEL', KEYS[1], KEYS[2])
return held(head, flight, gap, tail)
"#;

/// The scripts, with their SHA1 computed once.
#[derive(Debug)]
pub(super) struct Scripts {
    /// Source of `push`, for `SCRIPT LOAD` at the head of a pipeline of pushes.
    pub(super) push_source: String,
    pub(super) push: Script,
    pub(super) batch: Script,
    pub(super) ack: Script,
    pub(super) renew: Script,
    pub(super) release: Script,
    pub(super) heartbeat: Script,
    pub(super) live_members: Script,
    pub(super) discard: Script,
}

impl Scripts {
    pub(super) fn new() -> Self {
        let push_source = format!("{PRELUDE}{PUSH}");
        Self {
            push: Script::new(&push_source),
            push_source,
            batch: Script::new(&format!("{PRELUDE}{BATCH}")),
            ack: Script::new(&format!("{PRELUDE}{ACK}")),
            renew: Script::new(RENEW),
            release: Script::new(RELEASE),
            heartbeat: Script::new(&format!("{CLOCK}{HEARTBEAT}")),
            live_members: Script::new(&format!("{CLOCK}{LIVE_MEMBERS}")),
            discard: Script::new(&format!("{PRELUDE}{DISCARD}")),
        }
    }
}
