//! The queue in Redis: one Lua script per atomic step.
//!
//! Per concert (all in the slot of the hash tag `{<concert>}`):
//! - `t:<token>`: the token's hash (user, concert, issued, version, status, seq, admitted,
//!   expires, reason); times in epoch milliseconds;
//! - `u:<user>`: the user's token;
//! - `line` (token by seq), `idle` (waiting token by idle deadline), `active` (by expiry),
//!   `expired` (by expiry time): sorted sets;
//! - `seq`: the line's counter; `gen`: when the counter was created (its first value), which
//!   begins the line's generation; `adm`: the admission state (version, window, admitted, rate).
//!
//! The counter starts from the time it is created, in microseconds since the epoch, so that a
//! line that begins again after Redis lost its data gives every newcomer a place after every
//! place given before the loss, and a token whose place is older than `gen` is known to be
//! lost, not forgotten ([`QueueStore::restore`] puts such tokens back). A line whose `gen` is
//! missing (a counter of before generations, or a partial loss) begins a new generation above
//! its counter. `back` holds the tokens given back in this generation: one given back and then
//! forgotten (or replaced) is not given back again.
//!
//! A token carries its concert ([`QueueToken::concert`]), so reading a token is one `HGETALL`
//! of its hash in that concert's slot: no index from token to concert exists, and a token whose
//! concert part was altered names a key that is not there. Every step is one script over keys of
//! one slot. A position is `ZRANK`: O(log n) with any length of line.
//!
//! Outside every concert's slot there is only `concerts`, the set of concerts that ever had a
//! token, which the sweeper walks. It cannot join a per-concert script (it is in no concert's
//! slot), so a store registers a concert with one idempotent `SADD` *before* the insert script
//! runs: if the `SADD` fails, the request fails and nothing was inserted; if the script fails
//! after it, an extra registered concert costs the sweeper one empty script. A store remembers
//! which concerts it registered (per process, for [`CONCERT_REGISTRATION_REFRESH_SECS`]), so
//! the hot path pays for the `SADD` about once per concert per process; the refresh restores the
//! set if Redis lost it. Reads never depend on the set: a concert missing from it is only swept
//! later, and expiry is decided on every read anyway.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use redis::aio::ConnectionManager;

use super::backend;
use crate::error::StoreError;
use crate::ids::{ConcertId, QueueToken, UserId};
use crate::limits::PRE_QUEUE_DRAW_CHUNK;
use crate::queue::{
    AdmissionPlan, AdmissionSnapshot, ExpiryReason, InLine, Joined, LineOpening, NewToken, Polled,
    TokenRecord, TokenState,
};
use crate::store::{Lost, QueueStore, Restored, StoreResult};

/// Lua helper shared by the scripts: moves a token's indexes to match its status.
const REINDEX: &str = r"
local function unindex(b, t)
  redis.call('ZREM', b .. 'line', t)
  redis.call('ZREM', b .. 'idle', t)
  redis.call('ZREM', b .. 'active', t)
  redis.call('ZREM', b .. 'expired', t)
end
local function index(b, t, status, seq, expires)
  if status == 'WAITING' then
    redis.call('ZADD', b .. 'line', seq, t)
    redis.call('ZADD', b .. 'idle', expires, t)
  elseif status == 'ACTIVE' then
    redis.call('ZADD', b .. 'active', expires, t)
  else
    redis.call('ZADD', b .. 'expired', expires, t)
  end
end
local function line_gen(b, now_us)
  local g = redis.call('GET', b .. 'gen')
  if g then return g end
  g = now_us
  local s = redis.call('GET', b .. 'seq')
  if s and tonumber(s) >= tonumber(now_us) then g = string.format('%.0f', tonumber(s) + 1) end
  redis.call('SET', b .. 'seq', g)
  redis.call('SET', b .. 'gen', g)
  return g
end
local function next_seq(b, now_us)
  line_gen(b, now_us)
  return redis.call('INCR', b .. 'seq')
end
local function expire(b, t, reason, at)
  local k = b .. 't:' .. t
  unindex(b, t)
  redis.call('HINCRBY', k, 'version', 1)
  redis.call('HSET', k, 'status', 'EXPIRED', 'reason', reason, 'seq', '', 'expires', at)
  redis.call('ZADD', b .. 'expired', at, t)
end
";

/// KEYS[1] base; ARGV token, user, concert, issued, expires, replacing token or '', its version,
/// issued in microseconds.
const INSERT: &str = r"
local b = KEYS[1]
local ukey = b .. 'u:' .. ARGV[2]
local current = redis.call('GET', ukey)
if ARGV[6] == '' then
  if current then return {'CONFLICT'} end
else
  if current ~= ARGV[6] then return {'CONFLICT'} end
  if redis.call('HGET', b .. 't:' .. current, 'version') ~= ARGV[7] then return {'CONFLICT'} end
  unindex(b, current)
  redis.call('DEL', b .. 't:' .. current)
end
local seq = next_seq(b, ARGV[8])
redis.call('HSET', b .. 't:' .. ARGV[1], 'user', ARGV[2], 'concert', ARGV[3], 'issued', ARGV[4],
  'version', 1, 'status', 'WAITING', 'seq', seq, 'admitted', '', 'expires', ARGV[5], 'reason', '')
index(b, ARGV[1], 'WAITING', seq, ARGV[5])
redis.call('SET', ukey, ARGV[1])
return {'OK', string.format('%.0f', seq)}
";

/// KEYS[1] base; ARGV token, expected version, version, status, seq, admitted, expires, reason.
const UPDATE: &str = r"
local b = KEYS[1]
local k = b .. 't:' .. ARGV[1]
local v = redis.call('HGET', k, 'version')
if not v then return {'MISSING'} end
if v ~= ARGV[2] then return {'CONFLICT'} end
unindex(b, ARGV[1])
redis.call('HSET', k, 'version', ARGV[3], 'status', ARGV[4], 'seq', ARGV[5], 'admitted', ARGV[6],
  'expires', ARGV[7], 'reason', ARGV[8])
index(b, ARGV[1], ARGV[4], ARGV[5], ARGV[7])
return {'OK'}
";

/// KEYS[1] base; ARGV now, now in microseconds. Expires timed-out actives, then reports counts,
/// admission state (with whether the line was opened) and the line's generation (beginning one if the line has none).
const SNAPSHOT: &str = r"
local b = KEYS[1]
local gen = line_gen(b, ARGV[2])
local due = redis.call('ZRANGEBYSCORE', b .. 'active', '-inf', ARGV[1], 'WITHSCORES')
for i = 1, #due, 2 do expire(b, due[i], 'TIMED_OUT', due[i + 1]) end
local adm = redis.call('HMGET', b .. 'adm', 'version', 'window', 'admitted', 'rate', 'opened')
return {'OK', tostring(redis.call('ZCARD', b .. 'active')), tostring(redis.call('ZCARD', b .. 'line')),
  adm[1] or '0', adm[2] or '', adm[3] or '0', adm[4] or '0', adm[5] or '0', gen}
";

/// KEYS[1] base; ARGV now (ms), now (us), concert, then per token nine fields: token, user, issued,
/// status, line seq, admitted, expires, reason, version. Answers 'OK' then per token a word
/// (PRESENT, RESTORED, NOTLOST, SUPERSEDED) and the number of the token's hash entries and the
/// entries (none for NOTLOST and SUPERSEDED).
const RESTORE: &str = r"
local b = KEYS[1]
local now = tonumber(ARGV[1])
local gen = tonumber(line_gen(b, ARGV[2]))
local out = {'OK'}
local function answer(word, t)
  table.insert(out, word)
  if t then
    local fields = redis.call('HGETALL', b .. 't:' .. t)
    table.insert(out, tostring(#fields))
    for _, v in ipairs(fields) do table.insert(out, v) end
  else
    table.insert(out, '0')
  end
end
local i = 4
while i + 8 <= #ARGV do
  local t, user, issued, status, seq, admitted, expires, reason, version = unpack(ARGV, i, i + 8)
  i = i + 9
  if redis.call('EXISTS', b .. 't:' .. t) == 1 then
    answer('PRESENT', t)
  elseif tonumber(seq) >= gen or redis.call('SISMEMBER', b .. 'back', t) == 1 then
    answer('NOTLOST', nil)
  else
    local ukey = b .. 'u:' .. user
    local current = redis.call('GET', ukey)
    local blocked = false
    if current then
      local ck = b .. 't:' .. current
      local cs, cseq, cexp = unpack(redis.call('HMGET', ck, 'status', 'seq', 'expires'))
      if (cs == 'WAITING' or cs == 'ACTIVE') and tonumber(cexp or '0') > now then
        local better = cs == 'WAITING' and ((status == 'ACTIVE' and tonumber(expires) > now)
          or (status == 'WAITING' and tonumber(seq) < tonumber(cseq or '0')))
        blocked = not better
      end
      if not blocked then
        unindex(b, current)
        redis.call('DEL', ck)
      end
    end
    if blocked then
      answer('SUPERSEDED', nil)
    else
      local fseq = ''
      if status == 'WAITING' then fseq = seq end
      redis.call('HSET', b .. 't:' .. t, 'user', user, 'concert', ARGV[3], 'issued', issued, 'version', version,
        'status', status, 'seq', fseq, 'admitted', admitted, 'expires', expires, 'reason', reason)
      index(b, t, status, seq, expires)
      redis.call('SET', ukey, t)
      redis.call('SADD', b .. 'back', t)
      answer('RESTORED', t)
    end
  end
end
return out
";

/// Lua helpers of the poll and join steps: whether a token is waiting at `now` (refreshing it to
/// `deadline` if so), and the answer both give: the number of the token's hash entries, the
/// entries, and, while it waits, its position (0: not in line) and the admission state as
/// SNAPSHOT reports it.
const PLACE: &str = r"
local function refresh(b, t, now, deadline)
  local k = b .. 't:' .. t
  local expires = tonumber(redis.call('HGET', k, 'expires') or '0')
  if redis.call('HGET', k, 'status') ~= 'WAITING' or expires <= now then return false end
  redis.call('HINCRBY', k, 'version', 1)
  redis.call('HSET', k, 'expires', deadline)
  redis.call('ZADD', b .. 'idle', deadline, t)
  return true
end
local function report(out, b, t, waiting, now)
  local fields = redis.call('HGETALL', b .. 't:' .. t)
  table.insert(out, tostring(#fields))
  for _, v in ipairs(fields) do table.insert(out, v) end
  if waiting then
    local rank = redis.call('ZRANK', b .. 'line', t)
    local due = redis.call('ZRANGEBYSCORE', b .. 'active', '-inf', now, 'WITHSCORES')
    for i = 1, #due, 2 do expire(b, due[i], 'TIMED_OUT', due[i + 1]) end
    local adm = redis.call('HMGET', b .. 'adm', 'version', 'window', 'admitted', 'rate', 'opened')
    for _, v in ipairs({rank and tostring(rank + 1) or '0', tostring(redis.call('ZCARD', b .. 'active')),
        tostring(redis.call('ZCARD', b .. 'line')), adm[1] or '0', adm[2] or '', adm[3] or '0', adm[4] or '0',
        adm[5] or '0'}) do
      table.insert(out, v)
    end
  end
  return out
end
";

/// KEYS[1] base; ARGV token, now, idle deadline. One poll: a token waiting at `now` gets the idle
/// deadline (version + 1). Returns 'MISSING', or 'OK' and what `report` gives.
const POLL: &str = r"
local b = KEYS[1]
if not redis.call('HGET', b .. 't:' .. ARGV[1], 'status') then return {'MISSING'} end
local waiting = refresh(b, ARGV[1], tonumber(ARGV[2]), ARGV[3])
return report({'OK'}, b, ARGV[1], waiting, ARGV[2])
";

/// KEYS[1] base; ARGV new token, user, concert, now (issued), idle deadline, now in microseconds.
/// One join: the
/// user's token waiting at `now` is refreshed, an active one kept, and otherwise the new token
/// goes to the back of the line (replacing the user's expired one). Returns 'OK', '1' when the
/// new token was put in line ('0' otherwise), the user's token, and what `report` gives.
const JOIN: &str = r"
local b = KEYS[1]
local now = tonumber(ARGV[4])
local ukey = b .. 'u:' .. ARGV[2]
local current = redis.call('GET', ukey)
if current then
  if refresh(b, current, now, ARGV[5]) then
    return report({'OK', '0', current}, b, current, true, ARGV[4])
  end
  local k = b .. 't:' .. current
  if redis.call('HGET', k, 'status') == 'ACTIVE' and tonumber(redis.call('HGET', k, 'expires') or '0') > now then
    return report({'OK', '0', current}, b, current, false, ARGV[4])
  end
  unindex(b, current)
  redis.call('DEL', k)
end
local seq = next_seq(b, ARGV[6])
redis.call('HSET', b .. 't:' .. ARGV[1], 'user', ARGV[2], 'concert', ARGV[3], 'issued', ARGV[4],
  'version', 1, 'status', 'WAITING', 'seq', seq, 'admitted', '', 'expires', ARGV[5], 'reason', '')
index(b, ARGV[1], 'WAITING', seq, ARGV[5])
redis.call('SET', ukey, ARGV[1])
return report({'OK', '1', ARGV[1]}, b, ARGV[1], true, ARGV[4])
";

/// KEYS[1] base; ARGV expected version, quota, now, active expiry, window start, admitted before,
/// rate, expected generation, '1' if the line must have been opened. Returns 'OK' then, per
/// admitted token in order: token, user, issued, version.
const ADMIT: &str = r"
local b = KEYS[1]
local v = redis.call('HGET', b .. 'adm', 'version') or '0'
if v ~= ARGV[1] then return {'CONFLICT'} end
if (redis.call('GET', b .. 'gen') or '') ~= ARGV[8] then return {'CONFLICT'} end
if ARGV[9] == '1' and redis.call('HGET', b .. 'adm', 'opened') ~= '1' then return {'CONFLICT'} end
local quota = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local admitted = {'OK'}
while math.floor((#admitted - 1) / 4) < quota do
  local head = redis.call('ZRANGE', b .. 'line', 0, 0)
  if #head == 0 then break end
  local t = head[1]
  local k = b .. 't:' .. t
  local expires = tonumber(redis.call('HGET', k, 'expires'))
  if not expires then
    unindex(b, t)
  elseif expires <= now then
    expire(b, t, 'IDLE', expires)
  else
    unindex(b, t)
    redis.call('HINCRBY', k, 'version', 1)
    redis.call('HSET', k, 'status', 'ACTIVE', 'seq', '', 'admitted', ARGV[3], 'expires', ARGV[4])
    index(b, t, 'ACTIVE', 0, ARGV[4])
    local user, issued, version = unpack(redis.call('HMGET', k, 'user', 'issued', 'version'))
    table.insert(admitted, t)
    table.insert(admitted, user)
    table.insert(admitted, issued)
    table.insert(admitted, version)
  end
end
redis.call('HSET', b .. 'adm', 'version', tonumber(v) + 1, 'window', ARGV[5],
  'admitted', tonumber(ARGV[6]) + math.floor((#admitted - 1) / 4), 'rate', ARGV[7])
return admitted
";

/// KEYS[1] base; ARGV expected generation, '1' for the last part of the draw, then per move:
/// token, from, to. Unless the line is open (or began again: 'CONFLICT'), moves each token still
/// waiting at its `from` place to `to`; the last part marks the line opened and raises the
/// admission version. Returns 'OK' and '1' if it opened the line, '0' otherwise.
const OPEN: &str = r"
local b = KEYS[1]
if (redis.call('GET', b .. 'gen') or '') ~= ARGV[1] then return {'CONFLICT'} end
if redis.call('HGET', b .. 'adm', 'opened') == '1' then return {'OK', '0'} end
for i = 3, #ARGV - 2, 3 do
  local t, from, to = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local k = b .. 't:' .. t
  local status, seq = unpack(redis.call('HMGET', k, 'status', 'seq'))
  if status == 'WAITING' and tonumber(seq) == tonumber(from) then
    redis.call('HINCRBY', k, 'version', 1)
    redis.call('HSET', k, 'seq', to)
    redis.call('ZADD', b .. 'line', to, t)
  end
end
if ARGV[2] ~= '1' then return {'OK', '0'} end
redis.call('HSET', b .. 'adm', 'opened', '1')
redis.call('HINCRBY', b .. 'adm', 'version', 1)
return {'OK', '1'}
";

/// KEYS[1] base; ARGV now, forget before, limit. Returns 'OK' and the count touched.
const SWEEP: &str = r"
local b = KEYS[1]
local limit = tonumber(ARGV[3])
local n = 0
local idle = redis.call('ZRANGEBYSCORE', b .. 'idle', '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, limit)
for i = 1, #idle, 2 do expire(b, idle[i], 'IDLE', idle[i + 1]); n = n + 1 end
if limit - n > 0 then
  local due = redis.call('ZRANGEBYSCORE', b .. 'active', '-inf', ARGV[1], 'WITHSCORES', 'LIMIT', 0, limit - n)
  for i = 1, #due, 2 do expire(b, due[i], 'TIMED_OUT', due[i + 1]); n = n + 1 end
end
if limit - n > 0 then
  local old = redis.call('ZRANGEBYSCORE', b .. 'expired', '-inf', '(' .. ARGV[2], 'LIMIT', 0, limit - n)
  for _, t in ipairs(old) do
    local k = b .. 't:' .. t
    local ukey = b .. 'u:' .. (redis.call('HGET', k, 'user') or '')
    if redis.call('GET', ukey) == t then redis.call('DEL', ukey) end
    redis.call('DEL', k)
    redis.call('ZREM', b .. 'expired', t)
    n = n + 1
  end
end
return {'OK', tostring(n)}
";

fn script(body: &str) -> redis::Script {
    redis::Script::new(&format!("{REINDEX}\n{body}"))
}

/// How long a store trusts its own memory that a concert is in the `concerts` set before it
/// registers the concert again (a Redis that lost its data lost the set too).
pub const CONCERT_REGISTRATION_REFRESH_SECS: u64 = 60;
/// At most this many concerts are remembered as registered; past it the memory starts afresh
/// (which only costs one `SADD` per concert).
pub const REGISTERED_CONCERTS_MAX: usize = 10_000;
const REGISTRATION_REFRESH: Duration = Duration::from_secs(CONCERT_REGISTRATION_REFRESH_SECS);

/// The queue store over Redis. Clones share one managed connection and one memory of the
/// concerts registered for the sweeper.
#[derive(Clone)]
pub struct RedisQueueStore {
    conn: ConnectionManager,
    prefix: String,
    scripts: Arc<Scripts>,
    /// When this process last registered each concert in the `concerts` set.
    registered: Arc<Mutex<HashMap<ConcertId, Instant>>>,
}

struct Scripts {
    insert: redis::Script,
    update: redis::Script,
    snapshot: redis::Script,
    poll: redis::Script,
    join: redis::Script,
    admit: redis::Script,
    open: redis::Script,
    sweep: redis::Script,
    restore: redis::Script,
}

impl std::fmt::Debug for RedisQueueStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisQueueStore").field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

fn at_ms(text: &str) -> StoreResult<DateTime<Utc>> {
    text.parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| StoreError::Corrupt(format!("bad stored time {text:?}")))
}

fn corrupt(what: &str) -> StoreError {
    StoreError::Corrupt(format!("redis token: {what}"))
}

/// A token as the `report` of the POLL and JOIN scripts gives it: the number of its hash entries,
/// the entries, and, while it waits, its position and the admission state.
fn polled(token: QueueToken, concert: ConcertId, v: &[String]) -> StoreResult<Polled> {
    let n: usize = v.first().and_then(|n| n.parse().ok()).ok_or_else(|| corrupt("poll"))?;
    let entries = v.get(1..=n).ok_or_else(|| corrupt("poll"))?;
    let fields: HashMap<String, String> =
        entries.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
    let record = record(token, concert, &fields)?;
    let line = match v.get(n + 1..) {
        Some([position, rest @ ..]) if !rest.is_empty() => Some(InLine {
            position: position.parse().map_err(|_| corrupt("position"))?,
            snapshot: snapshot(rest)?,
        }),
        _ => None,
    };
    Ok(Polled { record, line })
}

/// The admission state as the SNAPSHOT and POLL scripts report it: active, waiting, version,
/// window start, admitted in window, rate, opened (then, from SNAPSHOT, the generation).
fn snapshot(v: &[String]) -> StoreResult<AdmissionSnapshot> {
    let field = |i: usize| v.get(i).map(String::as_str).ok_or_else(|| corrupt("admission state"));
    let number = |i: usize| field(i).and_then(|s| s.parse::<u64>().map_err(|_| corrupt("admission state")));
    let window = field(3)?;
    Ok(AdmissionSnapshot {
        active: u32::try_from(number(0)?).unwrap_or(u32::MAX),
        waiting: number(1)?,
        version: number(2)?,
        window_started_at: if window.is_empty() { None } else { Some(at_ms(window)?) },
        admitted_in_window: u32::try_from(number(4)?).unwrap_or(u32::MAX),
        rate_per_sec: field(5)?.parse().map_err(|_| corrupt("rate"))?,
        opened: field(6)? == "1",
        // The poll's report has no generation; the SNAPSHOT script's has.
        generation: match v.get(7) {
            Some(generation) => generation.parse().map_err(|_| corrupt("generation"))?,
            None => 0,
        },
    })
}

/// What a script answered: its status word, then its values.
fn answer(values: Vec<String>, what: &'static str) -> StoreResult<Vec<String>> {
    match values.first().map(String::as_str) {
        Some("OK") => Ok(values.into_iter().skip(1).collect()),
        Some("CONFLICT") => Err(StoreError::Conflict(what)),
        Some("MISSING") => Err(StoreError::Missing(what)),
        _ => Err(StoreError::Corrupt(format!("unexpected script answer for {what}"))),
    }
}

impl RedisQueueStore {
    /// A store under `prefix` (every key starts with it; tests use one prefix per test).
    #[must_use]
    pub fn new(conn: ConnectionManager, prefix: impl Into<String>) -> Self {
        Self {
            conn,
            prefix: prefix.into(),
            scripts: Arc::new(Scripts {
                insert: script(INSERT),
                update: script(UPDATE),
                snapshot: script(SNAPSHOT),
                poll: script(&format!("{PLACE}\n{POLL}")),
                join: script(&format!("{PLACE}\n{JOIN}")),
                admit: script(ADMIT),
                open: script(OPEN),
                sweep: script(SWEEP),
                restore: script(RESTORE),
            }),
            registered: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// Connects to `url` and uses `prefix`.
    ///
    /// # Errors
    /// [`StoreError::Backend`] when Redis cannot be reached.
    pub async fn connect(url: &str, prefix: impl Into<String>) -> StoreResult<Self> {
        Ok(Self::new(super::connect(url).await?, prefix))
    }

    fn base(&self, concert: ConcertId) -> String {
        format!("{}c:{{{concert}}}:", self.prefix)
    }

    fn concerts_key(&self) -> String {
        format!("{}concerts", self.prefix)
    }

    /// Whether this process registered `concert` recently enough to skip the `SADD`.
    fn recently_registered(&self, concert: ConcertId) -> bool {
        let registered = self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        registered.get(&concert).is_some_and(|at| at.elapsed() < REGISTRATION_REFRESH)
    }

    /// Puts `concert` in the `concerts` set the sweeper walks, unless this process did so
    /// recently. Idempotent, and done before the insert script: see the module docs.
    /// Before a new token is put in line: it must name its concert (filed under another, it could
    /// never be found from the token), and the concert is registered for the sweeper.
    async fn before_insert(&self, new: &NewToken) -> StoreResult<()> {
        if new.token.concert() != new.concert_id {
            return Err(StoreError::Corrupt(format!("a token of another concert for {}", new.concert_id)));
        }
        self.register_concert(new.concert_id).await
    }

    fn forget_registration(&self, concert: ConcertId) {
        self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&concert);
    }

    async fn register_concert(&self, concert: ConcertId) -> StoreResult<()> {
        if self.recently_registered(concert) {
            return Ok(());
        }
        redis::cmd("SADD")
            .arg(self.concerts_key())
            .arg(concert.to_string())
            .query_async::<()>(&mut self.conn())
            .await
            .map_err(backend("register concert"))?;
        let mut registered = self.registered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if registered.len() >= REGISTERED_CONCERTS_MAX {
            registered.clear();
        }
        registered.insert(concert, Instant::now());
        Ok(())
    }

    fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    async fn read(&self, concert: ConcertId, token: &QueueToken) -> StoreResult<Option<TokenRecord>> {
        let key = format!("{}t:{token}", self.base(concert));
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(key)
            .query_async(&mut self.conn())
            .await
            .map_err(backend("read token"))?;
        if fields.is_empty() {
            return Ok(None);
        }
        record(token.clone(), concert, &fields).map(Some)
    }
}

fn record(token: QueueToken, concert: ConcertId, f: &HashMap<String, String>) -> StoreResult<TokenRecord> {
    let get = |name: &str| f.get(name).map(String::as_str).ok_or_else(|| corrupt(name));
    let expires = at_ms(get("expires")?)?;
    let state = match get("status")? {
        "WAITING" => {
            TokenState::Waiting { seq: get("seq")?.parse().map_err(|_| corrupt("seq"))?, expires_at: expires }
        }
        "ACTIVE" => TokenState::Active { admitted_at: at_ms(get("admitted")?)?, expires_at: expires },
        "EXPIRED" => TokenState::Expired {
            at: expires,
            reason: match get("reason")? {
                "IDLE" => ExpiryReason::Idle,
                "TIMED_OUT" => ExpiryReason::TimedOut,
                "PAID" => ExpiryReason::Paid,
                "LEFT" => ExpiryReason::Left,
                "REVOKED" => ExpiryReason::Revoked,
                _ => return Err(corrupt("reason")),
            },
        },
        _ => return Err(corrupt("status")),
    };
    Ok(TokenRecord {
        token,
        user_id: UserId::parse(get("user")?).map_err(|_| corrupt("user"))?,
        concert_id: concert,
        issued_at: at_ms(get("issued")?)?,
        version: get("version")?.parse().map_err(|_| corrupt("version"))?,
        state,
    })
}

/// The stored fields of a state: status, seq, admitted, expires, reason.
fn fields(state: &TokenState) -> (&'static str, String, String, i64, &'static str) {
    match state {
        TokenState::Waiting { seq, expires_at } => {
            ("WAITING", seq.to_string(), String::new(), ms(*expires_at), "")
        }
        TokenState::Active { admitted_at, expires_at } => {
            ("ACTIVE", String::new(), ms(*admitted_at).to_string(), ms(*expires_at), "")
        }
        TokenState::Expired { at, reason } => {
            let reason = match reason {
                ExpiryReason::Idle => "IDLE",
                ExpiryReason::TimedOut => "TIMED_OUT",
                ExpiryReason::Paid => "PAID",
                ExpiryReason::Left => "LEFT",
                ExpiryReason::Revoked => "REVOKED",
            };
            ("EXPIRED", String::new(), String::new(), ms(*at), reason)
        }
    }
}

impl QueueStore for RedisQueueStore {
    async fn token(&self, token: &QueueToken) -> StoreResult<Option<TokenRecord>> {
        self.read(token.concert(), token).await
    }

    async fn token_of_user(&self, concert: ConcertId, user: &UserId) -> StoreResult<Option<TokenRecord>> {
        let key = format!("{}u:{user}", self.base(concert));
        let token: Option<String> =
            redis::cmd("GET").arg(key).query_async(&mut self.conn()).await.map_err(backend("user token"))?;
        let Some(token) = token else { return Ok(None) };
        let token = QueueToken::parse(&token).map_err(|_| corrupt("user token"))?;
        self.read(concert, &token).await
    }

    async fn insert_token(&self, new: NewToken, replacing: Option<&TokenRecord>) -> StoreResult<TokenRecord> {
        self.before_insert(&new).await?;
        let (old, old_version) = replacing
            .map_or((String::new(), String::new()), |r| (r.token.to_string(), r.version.to_string()));
        let values: Vec<String> = self
            .scripts
            .insert
            .key(self.base(new.concert_id))
            .arg(new.token.as_str())
            .arg(new.user_id.as_str())
            .arg(new.concert_id.to_string())
            .arg(ms(new.issued_at))
            .arg(ms(new.expires_at))
            .arg(&old)
            .arg(&old_version)
            .arg(new.issued_at.timestamp_micros())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend("insert token"))?;
        let values = answer(values, "queue token of user")?;
        let seq: u64 = values.first().and_then(|s| s.parse().ok()).ok_or_else(|| corrupt("seq"))?;
        Ok(new.waiting(seq))
    }

    async fn update_token(&self, expected_version: u64, updated: &TokenRecord) -> StoreResult<()> {
        let (status, seq, admitted, expires, reason) = fields(&updated.state);
        let values: Vec<String> = self
            .scripts
            .update
            .key(self.base(updated.concert_id))
            .arg(updated.token.as_str())
            .arg(expected_version)
            .arg(updated.version)
            .arg(status)
            .arg(seq)
            .arg(admitted)
            .arg(expires)
            .arg(reason)
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend("update token"))?;
        answer(values, "queue token").map(|_| ())
    }

    async fn position(&self, record: &TokenRecord) -> StoreResult<u64> {
        if record.seq().is_none() {
            return Ok(0);
        }
        let key = format!("{}line", self.base(record.concert_id));
        let rank: Option<u64> = redis::cmd("ZRANK")
            .arg(key)
            .arg(record.token.as_str())
            .query_async(&mut self.conn())
            .await
            .map_err(backend("position"))?;
        Ok(rank.map_or(0, |r| r + 1))
    }

    async fn admission_snapshot(
        &self,
        concert: ConcertId,
        now: DateTime<Utc>,
    ) -> StoreResult<AdmissionSnapshot> {
        let values: Vec<String> = self
            .scripts
            .snapshot
            .key(self.base(concert))
            .arg(ms(now))
            .arg(now.timestamp_micros())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend("admission snapshot"))?;
        snapshot(&answer(values, "admission state")?)
    }

    async fn poll(
        &self,
        token: &QueueToken,
        now: DateTime<Utc>,
        deadline: DateTime<Utc>,
    ) -> StoreResult<Option<Polled>> {
        let concert = token.concert();
        let values: Vec<String> = self
            .scripts
            .poll
            .key(self.base(concert))
            .arg(token.as_str())
            .arg(ms(now))
            .arg(ms(deadline))
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend("poll"))?;
        match answer(values, "queue token") {
            Err(StoreError::Missing(_)) => Ok(None),
            other => polled(token.clone(), concert, &other?).map(Some),
        }
    }

    async fn join(&self, new: NewToken, now: DateTime<Utc>) -> StoreResult<Joined> {
        self.before_insert(&new).await?;
        let values: Vec<String> = self
            .scripts
            .join
            .key(self.base(new.concert_id))
            .arg(new.token.as_str())
            .arg(new.user_id.as_str())
            .arg(new.concert_id.to_string())
            .arg(ms(now))
            .arg(ms(new.expires_at))
            .arg(now.timestamp_micros())
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend("join"))?;
        let v = answer(values, "queue token of user")?;
        let (created, token) = match v.as_slice() {
            [created, token, ..] => {
                (created == "1", QueueToken::parse(token).map_err(|_| corrupt("user token"))?)
            }
            _ => return Err(corrupt("join")),
        };
        Ok(Joined { polled: polled(token, new.concert_id, &v[2..])?, created })
    }

    async fn admit(&self, plan: &AdmissionPlan) -> StoreResult<Vec<TokenRecord>> {
        let values: Vec<String> = self
            .scripts
            .admit
            .key(self.base(plan.concert_id))
            .arg(plan.expected_version)
            .arg(plan.quota)
            .arg(ms(plan.now))
            .arg(ms(plan.active_expires_at))
            .arg(ms(plan.window_started_at))
            .arg(plan.admitted_before)
            .arg(plan.rate_per_sec)
            .arg(plan.generation)
            .arg(if plan.requires_open { "1" } else { "0" })
            .invoke_async(&mut self.conn())
            .await
            .map_err(backend("admit"))?;
        let fields = answer(values, "admission state")?;
        // The script answers each admitted token's fields, so nothing is read back.
        fields
            .chunks(4)
            .map(|f| {
                let [token, user, issued, version] = f else { return Err(corrupt("admitted token")) };
                Ok(TokenRecord {
                    token: QueueToken::parse(token).map_err(|_| corrupt("admitted token"))?,
                    user_id: UserId::parse(user).map_err(|_| corrupt("user"))?,
                    concert_id: plan.concert_id,
                    issued_at: at_ms(issued)?,
                    version: version.parse().map_err(|_| corrupt("version"))?,
                    state: TokenState::Active { admitted_at: plan.now, expires_at: plan.active_expires_at },
                })
            })
            .collect()
    }

    async fn waiting_line(&self, concert: ConcertId, limit: usize) -> StoreResult<Vec<(u64, QueueToken)>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let head: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(format!("{}line", self.base(concert)))
            .arg(0)
            // Past an i64, to the end (-1).
            .arg(i64::try_from(limit - 1).unwrap_or(-1))
            .arg("WITHSCORES")
            .query_async(&mut self.conn())
            .await
            .map_err(backend("line"))?;
        head.into_iter()
            .map(|(token, seq)| {
                let token = QueueToken::parse(&token).map_err(|_| corrupt("line token"))?;
                // Places are below 2^53 (microseconds since the epoch, counted on), so exact.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let seq = seq as u64;
                Ok((seq, token))
            })
            .collect()
    }

    /// In parts of [`PRE_QUEUE_DRAW_CHUNK`] moves, one script each (a script holds Redis for
    /// every concert while it runs), the line marked open by the last. A draw stopped midway is
    /// made again whole by the next tick: a token's drawn place depends only on the seed and the
    /// set of places, not on where the token is.
    async fn open_line(&self, opening: &LineOpening) -> StoreResult<bool> {
        let parts: Vec<&[crate::queue::Move]> = if opening.moves.is_empty() {
            vec![&[]]
        } else {
            opening.moves.chunks(PRE_QUEUE_DRAW_CHUNK).collect()
        };
        let mut opened = false;
        for (i, part) in parts.iter().enumerate() {
            let mut invocation = self.scripts.open.key(self.base(opening.concert_id));
            invocation.arg(opening.generation).arg(if i + 1 == parts.len() { "1" } else { "0" });
            for one in *part {
                invocation.arg(one.token.as_str()).arg(one.from).arg(one.to);
            }
            let values: Vec<String> =
                invocation.invoke_async(&mut self.conn()).await.map_err(backend("open line"))?;
            opened = answer(values, "line")?.first().map(String::as_str) == Some("1");
        }
        Ok(opened)
    }

    async fn sweep_queue(
        &self,
        now: DateTime<Utc>,
        forget_before: DateTime<Utc>,
        limit: usize,
    ) -> StoreResult<usize> {
        let concerts: Vec<String> = redis::cmd("SMEMBERS")
            .arg(self.concerts_key())
            .query_async(&mut self.conn())
            .await
            .map_err(backend("concerts"))?;
        let mut touched = 0;
        for concert in concerts {
            let Ok(concert) = ConcertId::parse(&concert) else { continue };
            if touched >= limit {
                break;
            }
            let values: Vec<String> = self
                .scripts
                .sweep
                .key(self.base(concert))
                .arg(ms(now))
                .arg(ms(forget_before))
                .arg(limit - touched)
                .invoke_async(&mut self.conn())
                .await
                .map_err(backend("sweep"))?;
            let values = answer(values, "sweep")?;
            touched += values.first().and_then(|n| n.parse::<usize>().ok()).unwrap_or(0);
        }
        Ok(touched)
    }

    async fn ping_queue(&self) -> StoreResult<()> {
        redis::cmd("PING").query_async::<String>(&mut self.conn()).await.map_err(backend("ping"))?;
        Ok(())
    }

    async fn restore(&self, lost: &[Lost], now: DateTime<Utc>) -> StoreResult<Vec<Restored>> {
        let mut answers = Vec::with_capacity(lost.len());
        // One script per concert (its keys share one slot), in the order given.
        let mut rest = lost;
        while let Some(first) = rest.first() {
            let concert = first.record.concert_id;
            let run = rest.iter().take_while(|one| one.record.concert_id == concert).count();
            let (batch, tail) = rest.split_at(run);
            rest = tail;
            // A store that lost its data lost the sweeper's set too: register again now.
            self.forget_registration(concert);
            self.register_concert(concert).await?;
            let mut invocation = self.scripts.restore.key(self.base(concert));
            invocation.arg(ms(now)).arg(now.timestamp_micros()).arg(concert.to_string());
            for one in batch {
                let r = &one.record;
                if r.token.concert() != concert {
                    return Err(StoreError::Corrupt(format!("a token of another concert for {concert}")));
                }
                let (status, seq, admitted, expires, reason) = fields(&r.state);
                let line_seq = if seq.is_empty() { one.line_seq.to_string() } else { seq };
                invocation
                    .arg(r.token.as_str())
                    .arg(r.user_id.as_str())
                    .arg(ms(r.issued_at))
                    .arg(status)
                    .arg(line_seq)
                    .arg(admitted)
                    .arg(expires)
                    .arg(reason)
                    .arg(r.version);
            }
            let values: Vec<String> =
                invocation.invoke_async(&mut self.conn()).await.map_err(backend("restore"))?;
            let values = answer(values, "restore")?;
            let mut at = 0;
            for one in batch {
                let word = values.get(at).ok_or_else(|| corrupt("restore"))?;
                let n: usize =
                    values.get(at + 1).and_then(|n| n.parse().ok()).ok_or_else(|| corrupt("restore"))?;
                let entries = values.get(at + 2..at + 2 + n).ok_or_else(|| corrupt("restore"))?;
                at += 2 + n;
                let stored = || -> StoreResult<TokenRecord> {
                    let fields: HashMap<String, String> =
                        entries.chunks_exact(2).map(|pair| (pair[0].clone(), pair[1].clone())).collect();
                    record(one.record.token.identity(), concert, &fields)
                };
                answers.push(match word.as_str() {
                    "PRESENT" => Restored::Present(stored()?),
                    "RESTORED" => Restored::Restored(stored()?),
                    "NOTLOST" => Restored::NotLost,
                    "SUPERSEDED" => Restored::Superseded,
                    _ => return Err(corrupt("restore")),
                });
            }
        }
        Ok(answers)
    }
}
