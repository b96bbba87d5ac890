//! The wall clock, as state files and reports write it.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Now, as RFC 3339 in UTC.
pub fn now() -> String {
    OffsetDateTime::now_utc().format(&Rfc3339).unwrap_or_default()
}

/// Unix seconds as RFC 3339 in UTC (None when out of range).
pub fn rfc3339(unix_seconds: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix_seconds).ok()?.format(&Rfc3339).ok()
}

/// RFC 3339 as Unix seconds, with the fraction (None when it does not parse).
pub fn unix_seconds(rfc3339: &str) -> Option<f64> {
    OffsetDateTime::parse(rfc3339, &Rfc3339).ok().map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
}

/// Test hook: Unix seconds that `now_unix` returns instead of the clock (rollout waves are hours long).
pub const TEST_NOW: &str = "GITOPS_TEST_NOW";

/// Now as Unix seconds, for decisions that wait (`GITOPS_TEST_NOW` steps it in tests).
pub fn now_unix() -> i64 {
    std::env::var(TEST_NOW)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| OffsetDateTime::now_utc().unix_timestamp())
}
