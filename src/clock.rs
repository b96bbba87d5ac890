//! The wall clock, as state files, reports and schedules read it; `GITOPS_TEST_NOW` stands in for it in tests.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Unix seconds that replace the wall clock in every code path that reads it through here, so tests
/// can move time forward (reconcile schedules, suspensions, rollout windows) without sleeping.
pub const TEST_NOW: &str = "GITOPS_TEST_NOW";

/// Now, honouring `GITOPS_TEST_NOW` (read once per process).
fn now_utc() -> OffsetDateTime {
    static FAKE: std::sync::OnceLock<Option<OffsetDateTime>> = std::sync::OnceLock::new();
    let fake = FAKE.get_or_init(|| {
        let value = std::env::var(TEST_NOW).ok()?;
        let parsed = value.trim().parse::<i64>().ok().and_then(|s| OffsetDateTime::from_unix_timestamp(s).ok());
        if parsed.is_none() {
            log::warn!("{TEST_NOW}={value:?} is not Unix seconds; using the real clock");
        }
        parsed
    });
    fake.unwrap_or_else(OffsetDateTime::now_utc)
}

/// Now, as Unix seconds.
pub fn now_unix() -> i64 {
    now_utc().unix_timestamp()
}

/// Now, as RFC 3339 in UTC.
pub fn now() -> String {
    now_utc().format(&Rfc3339).unwrap_or_default()
}

/// Unix seconds as RFC 3339 in UTC (None when out of range).
pub fn rfc3339(unix_seconds: i64) -> Option<String> {
    OffsetDateTime::from_unix_timestamp(unix_seconds).ok()?.format(&Rfc3339).ok()
}

/// RFC 3339 as Unix seconds, with the fraction (None when it does not parse).
pub fn unix_seconds(rfc3339: &str) -> Option<f64> {
    OffsetDateTime::parse(rfc3339, &Rfc3339).ok().map(|t| t.unix_timestamp_nanos() as f64 / 1e9)
}
