//! Rate limits counted in the store: the same GCRA as `ratelimit/gcra.rs`, run as one
//! server-side script so that the read and the write of a client's theoretical arrival
//! time (TAT) are atomic across every gateway, on the server's own clock (`TIME`), so
//! the gateways' clocks do not matter. Times are microseconds (exact in Lua's doubles
//! for centuries); the key expires when the client's bucket is full again, which is
//! the same as no entry, so the store holds only clients that are being limited.

use std::sync::OnceLock;

use super::{Store, StoreError};

/// KEYS[1]: the client's TAT. ARGV[1]: the emission interval T, ARGV[2]: T * burst,
/// both in microseconds. Returns {allowed, remaining, reset, retry_after} (µs).
const GCRA: &str = r#"
local t = tonumber(ARGV[1])
local cap = tonumber(ARGV[2])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + t
local allow_at = new_tat - cap
if now < allow_at then
  return {0, 0, tat - now, allow_at - now}
end
local used = new_tat - now
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil(used / 1000))
return {1, math.floor((cap - used) / t), used, 0}
"#;

fn script() -> &'static redis::Script {
    static SCRIPT: OnceLock<redis::Script> = OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GCRA))
}

/// The store's answer for one request, in nanoseconds like the local limiter's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shared {
    pub allowed: bool,
    pub remaining: u32,
    pub reset_ns: u64,
    pub retry_after_ns: u64,
}

impl Store {
    /// Counts one request of the client whose key is `key` against a limit with
    /// emission interval `t_us` and capacity `cap_us` (microseconds).
    pub async fn gcra(&self, key: &str, t_us: u64, cap_us: u64) -> Result<Shared, StoreError> {
        let (allowed, remaining, reset, retry): (i64, i64, i64, i64) = self
            .call("ratelimit", |mut conn| async move {
                script()
                    .key(key)
                    .arg(t_us)
                    .arg(cap_us)
                    .invoke_async(&mut conn)
                    .await
            })
            .await?;
        let ns = |us: i64| (us.max(0) as u64).saturating_mul(1000);
        Ok(Shared {
            allowed: allowed == 1,
            remaining: remaining.clamp(0, i64::from(u32::MAX)) as u32,
            reset_ns: ns(reset),
            retry_after_ns: ns(retry),
        })
    }
}
