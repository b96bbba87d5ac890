//! Generic parsers for flag values: durations and sizes.

use std::time::Duration;

/// The longest duration accepted anywhere: beyond it a typo is likelier than intent.
const MAX_DURATION: Duration = Duration::from_secs(366 * 86400);

/// Parse `512K`, `500M`, `2G` (powers of 1024) or plain bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| "not a size".to_string())?;
    let factor: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        other => return Err(format!("unknown unit {other:?}")),
    };
    number.checked_mul(factor).filter(|n| *n > 0).ok_or_else(|| "must be more than zero and less than 16 EiB".into())
}

/// Parse `90s`, `30m`, `2h`, `1d` or `500ms` (at most a year). A number without a unit is refused
/// (`window=90` once rolled a fleet out in 90 seconds): only `0` needs none.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = parse_duration_unbounded(text)?;
    if duration > MAX_DURATION {
        return Err("longer than a year".into());
    }
    Ok(duration)
}

/// A duration the way `parse_duration` reads it, in the largest unit that says it exactly: `2h`, `90m`, `45s`.
pub fn format_duration(duration: Duration) -> String {
    let s = duration.as_secs();
    match s {
        0 => format!("{}ms", duration.as_millis()),
        _ if s.is_multiple_of(86400) => format!("{}d", s / 86400),
        _ if s.is_multiple_of(3600) => format!("{}h", s / 3600),
        _ if s.is_multiple_of(60) => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn parse_duration_unbounded(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| "not a duration".to_string())?;
    let seconds = match unit.trim() {
        "ms" => return Ok(Duration::from_millis(number)),
        "" if number != 0 => {
            return Err(format!("{number} has no unit: did you mean {number}s, {number}m or {number}h?"));
        }
        "" | "s" | "sec" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86400,
        other => return Err(format!("unknown unit {other:?}")),
    };
    if number == 0 {
        return Err("must be more than zero".into());
    }
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("45"), Err("45 has no unit: did you mean 45s, 45m or 45h?".into()));
        assert_eq!(parse_duration("0"), Err("must be more than zero".into()));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0").is_err());
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("-5s").is_err());
        assert!(parse_duration("99999999999999999999d").is_err());
        assert!(parse_duration("400d").is_err());
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert!(parse_size("0").is_err() && parse_size("1Q").is_err() && parse_size("99999999999T").is_err());
    }
}
