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

/// An RFC 3339 time as an operator reads it: `2026-12-04 13:30:50 UTC (3 min ago)`, whole seconds, in
/// UTC; `now_unix` gives the "ago". Text that does not parse is returned as it is.
pub fn for_humans(rfc3339: &str, now_unix: i64) -> String {
    let Ok(at) = OffsetDateTime::parse(rfc3339, &Rfc3339) else { return rfc3339.to_string() };
    let at = at.to_offset(time::UtcOffset::UTC);
    let format = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    let when = at.format(&format).unwrap_or_else(|_| rfc3339.to_string());
    format!("{when} ({})", relative(now_unix - at.unix_timestamp()))
}

/// `3 min ago`, `in 2 h`, `just now`: how far `seconds` (positive: in the past) is from now.
pub fn relative(seconds: i64) -> String {
    let (span, past) = (seconds.unsigned_abs(), seconds >= 0);
    let amount = match span {
        0..=4 => return "just now".to_string(),
        5..=119 => format!("{span} s"),
        120..=7199 => format!("{} min", span / 60),
        7200..=172_799 => format!("{} h", span / 3600),
        _ => format!("{} days", span / 86400),
    };
    if past { format!("{amount} ago") } else { format!("in {amount}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_for_humans() {
        let now = 1_796_131_850; // 2026-12-01T13:30:50Z
        assert_eq!(for_humans("2026-12-01T13:27:50.123456789Z", now), "2026-12-01 13:27:50 UTC (3 min ago)");
        assert_eq!(for_humans("2026-12-01T14:30:50+01:00", now), "2026-12-01 13:30:50 UTC (just now)");
        assert_eq!(for_humans("2026-12-01T15:30:50Z", now), "2026-12-01 15:30:50 UTC (in 2 h)");
        assert_eq!(for_humans("yesterday", now), "yesterday");
        assert_eq!(relative(90), "90 s ago");
        assert_eq!(relative(3 * 86400), "3 days ago");
    }
}
