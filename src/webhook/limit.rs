//! Rate limits for the webhook: a token bucket per source address and one for all sources together.
//!
//! Pure: the caller passes the clock in, so the arithmetic is unit tested without sleeping.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Source buckets kept at most; beyond it, full (idle) buckets are forgotten first.
const MAX_SOURCES: usize = 4096;

/// A bucket of `capacity` tokens refilled at `capacity` per minute; one request takes one token.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    capacity: f64,
    refilled_at: Instant,
}

impl Bucket {
    fn new(per_minute: u32, now: Instant) -> Bucket {
        let capacity = f64::from(per_minute.max(1));
        Bucket { tokens: capacity, capacity, refilled_at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.capacity / 60.0).min(self.capacity);
        self.refilled_at = now;
    }

    /// How long until one token is available (zero when one is there now).
    fn wait(&self) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) * 60.0 / self.capacity)
        }
    }

    fn is_full(&self) -> bool {
        self.tokens >= self.capacity
    }
}

/// Which limit refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// This source address sent too many requests.
    Source,
    /// All sources together sent too many requests.
    Total,
}

/// A refused request: which limit, and when trying again can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    /// The limit that was hit.
    pub scope: Scope,
    /// Time until a token is back (for `Retry-After`).
    pub retry_after: Duration,
}

/// Per-source and total token buckets.
#[derive(Debug)]
pub struct RateLimiter {
    per_source: u32,
    total: Bucket,
    sources: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    /// Allow bursts of `per_source` requests per source and `total` overall, each refilled per minute.
    pub fn new(per_source: u32, total: u32, now: Instant) -> RateLimiter {
        RateLimiter { per_source, total: Bucket::new(total, now), sources: HashMap::new() }
    }

    /// Take a token for a request from `source`, or say which limit refuses it.
    ///
    /// The source's own bucket is checked first, so a single flooding source only
    /// drains its own tokens and not the ones other sources (the forge) need.
    pub fn check(&mut self, source: IpAddr, now: Instant) -> Result<(), Limited> {
        let key = source_key(source);
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_SOURCES {
            for bucket in self.sources.values_mut() {
                bucket.refill(now);
            }
            self.sources.retain(|_, bucket| !bucket.is_full());
        }
        self.total.refill(now);
        // With MAX_SOURCES sources all busy at once, a new one is only held to the total limit.
        let tracked = self.sources.contains_key(&key) || self.sources.len() < MAX_SOURCES;
        if tracked {
            let per_source = self.per_source;
            let bucket = self.sources.entry(key).or_insert_with(|| Bucket::new(per_source, now));
            bucket.refill(now);
            if bucket.tokens < 1.0 {
                return Err(Limited { scope: Scope::Source, retry_after: bucket.wait() });
            }
        }
        if self.total.tokens < 1.0 {
            return Err(Limited { scope: Scope::Total, retry_after: self.total.wait() });
        }
        self.total.tokens -= 1.0;
        if let Some(bucket) = self.sources.get_mut(&key) {
            bucket.tokens -= 1.0;
        }
        Ok(())
    }
}

/// IPv6 sources are limited per /64: one host usually owns a whole /64 and could rotate through it.
fn source_key(source: IpAddr) -> IpAddr {
    match source {
        IpAddr::V4(_) => source,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let prefix = u128::from(v6) & (u128::MAX << 64);
                IpAddr::V6(prefix.into())
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn a_source_gets_its_burst_then_waits_for_refill() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(3, 100, t0);
        for _ in 0..3 {
            assert_eq!(limiter.check(ip("192.0.2.1"), t0), Ok(()));
        }
        let refused = limiter.check(ip("192.0.2.1"), t0).unwrap_err();
        assert_eq!(refused.scope, Scope::Source);
        // 3 per minute: one token every 20 s.
        assert_eq!(refused.retry_after, Duration::from_secs(20));
        assert!(limiter.check(ip("192.0.2.1"), t0 + Duration::from_secs(19)).is_err());
        assert_eq!(limiter.check(ip("192.0.2.1"), t0 + Duration::from_secs(20)), Ok(()));
    }

    #[test]
    fn a_flooding_source_does_not_spend_the_total_budget() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(2, 3, t0);
        for _ in 0..50 {
            let _ = limiter.check(ip("198.51.100.7"), t0);
        }
        // The flood took 2 of the 3 total tokens; refusals took none.
        assert_eq!(limiter.check(ip("192.0.2.1"), t0), Ok(()));
        let refused = limiter.check(ip("192.0.2.2"), t0).unwrap_err();
        assert_eq!(refused.scope, Scope::Total);
    }

    #[test]
    fn ipv6_sources_share_a_bucket_per_64() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, 100, t0);
        assert_eq!(limiter.check(ip("2001:db8:1:2::1"), t0), Ok(()));
        assert!(limiter.check(ip("2001:db8:1:2:ffff::9"), t0).is_err());
        assert_eq!(limiter.check(ip("2001:db8:1:3::1"), t0), Ok(()));
        // An IPv4-mapped address is the IPv4 source.
        assert_eq!(limiter.check(ip("192.0.2.9"), t0), Ok(()));
        assert!(limiter.check(ip("::ffff:192.0.2.9"), t0).is_err());
    }

    #[test]
    fn the_source_table_stays_bounded() {
        let t0 = Instant::now();
        let mut limiter = RateLimiter::new(1, u32::MAX, t0);
        for n in 0..(MAX_SOURCES as u32 + 10) {
            let _ = limiter.check(IpAddr::V4(n.into()), t0);
        }
        assert!(limiter.sources.len() <= MAX_SOURCES);
        // A minute later every bucket is full again, so the table is pruned for newcomers.
        let later = t0 + Duration::from_secs(60);
        assert_eq!(limiter.check(ip("203.0.113.1"), later), Ok(()));
        assert!(limiter.sources.len() < 10);
    }
}
