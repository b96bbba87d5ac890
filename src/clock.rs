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
