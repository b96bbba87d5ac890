//! Reboot windows (`--reboot-window "Mon-Fri 02:00-04:00"`): the grammar, and whether a local time falls inside.
//!
//! ```text
//! window   = spec *( ";" spec )
//! spec     = [ days " " ] time "-" time        days omitted = every day
//! days     = dayrange *( "," dayrange )
//! dayrange = day [ "-" day ]                   Fri-Mon wraps over the weekend
//! day      = Mon | Tue | Wed | Thu | Fri | Sat | Sun   (any case; full names too)
//! time     = HH:MM                             the end may be 24:00
//! ```
//!
//! A spec opens at its start time on each listed day and closes at its end time (exclusive); an end at or before
//! the start runs past midnight into the next day, so `Sat 22:00-02:00` is Saturday 22:00 to Sunday 02:00.
//! Times are the host's local wall-clock time (see [`local_time`]).

use std::fmt;

const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const FULL_DAYS: [&str; 7] = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"];
const MINUTES_PER_DAY: u16 = 24 * 60;

/// A parsed `--reboot-window`: one or more weekly specs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    specs: Vec<Spec>,
    text: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Spec {
    /// Days the window opens on, Monday first.
    days: [bool; 7],
    /// Minute of the day it opens.
    start: u16,
    /// Minute of the day it closes (exclusive); at or before `start` means the next day.
    end: u16,
}

/// A local wall-clock time: weekday (0 = Monday) and minute of the day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// 0 = Monday … 6 = Sunday.
    pub weekday: u8,
    /// 0 ..= 1439.
    pub minute: u16,
}

impl fmt::Display for LocalTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let day = DAYS.get(usize::from(self.weekday)).copied().unwrap_or("?");
        write!(f, "{day} {:02}:{:02}", self.minute / 60, self.minute % 60)
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Window {
    /// Parse the grammar in the module documentation; the error says what is wrong with which part.
    pub fn parse(text: &str) -> Result<Window, String> {
        let mut specs = Vec::new();
        for part in text.split(';').map(str::trim) {
            if part.is_empty() {
                return Err("empty window; write e.g. \"Mon-Fri 02:00-04:00\"".into());
            }
            specs.push(parse_spec(part).map_err(|e| format!("{part:?}: {e}"))?);
        }
        Ok(Window { specs, text: text.trim().to_string() })
    }

    /// Whether `now` (local time) is inside the window.
    pub fn contains(&self, now: LocalTime) -> bool {
        let yesterday = (now.weekday + 6) % 7;
        self.specs.iter().any(|spec| {
            let today = spec.days[usize::from(now.weekday)];
            if spec.start < spec.end {
                today && (spec.start..spec.end).contains(&now.minute)
            } else {
                // Past midnight: the part after the start today, or the tail of yesterday's opening.
                (today && now.minute >= spec.start) || (spec.days[usize::from(yesterday)] && now.minute < spec.end)
            }
        })
    }
}

fn parse_spec(part: &str) -> Result<Spec, String> {
    let (days, times) = match part.rsplit_once(char::is_whitespace) {
        Some((days, times)) => (parse_days(days.trim())?, times),
        None => ([true; 7], part),
    };
    let (start, end) =
        times.split_once('-').ok_or_else(|| format!("{times:?} is not a time range; write HH:MM-HH:MM"))?;
    let start = parse_time(start)?;
    let end = parse_time(end)?;
    if start == MINUTES_PER_DAY {
        return Err("a window cannot start at 24:00; use 00:00".into());
    }
    if start == end % MINUTES_PER_DAY && end != MINUTES_PER_DAY {
        return Err("start and end are equal; for a whole day write 00:00-24:00".into());
    }
    Ok(Spec { days, start, end: if end == MINUTES_PER_DAY && start == 0 { end } else { end % MINUTES_PER_DAY } })
}

fn parse_days(text: &str) -> Result<[bool; 7], String> {
    let mut days = [false; 7];
    for range in text.split(',').map(str::trim) {
        let (from, to) = match range.split_once('-') {
            Some((from, to)) => (parse_day(from)?, parse_day(to)?),
            None => {
                let day = parse_day(range)?;
                (day, day)
            }
        };
        let mut day = from;
        loop {
            days[day] = true;
            if day == to {
                break;
            }
            day = (day + 1) % 7;
        }
    }
    Ok(days)
}

fn parse_day(text: &str) -> Result<usize, String> {
    let lower = text.trim().to_ascii_lowercase();
    DAYS.iter()
        .position(|d| d.to_ascii_lowercase() == lower)
        .or_else(|| FULL_DAYS.iter().position(|d| *d == lower))
        .ok_or_else(|| format!("{text:?} is not a day; use Mon, Tue, Wed, Thu, Fri, Sat or Sun"))
}

fn parse_time(text: &str) -> Result<u16, String> {
    let bad = || format!("{text:?} is not a time; write HH:MM (00:00 to 24:00)");
    let (hours, minutes) = text.trim().split_once(':').ok_or_else(bad)?;
    if hours.is_empty() || hours.len() > 2 || minutes.len() != 2 {
        return Err(bad());
    }
    let hours: u16 = hours.parse().map_err(|_| bad())?;
    let minutes: u16 = minutes.parse().map_err(|_| bad())?;
    if minutes > 59 || hours > 24 || (hours == 24 && minutes != 0) {
        return Err(bad());
    }
    Ok(hours * 60 + minutes)
}

/// The host's local wall-clock time at `unix_seconds`: the `TZ` variable if set, else /etc/localtime.
///
/// The `time` crate refuses local offsets once a process has threads, because `localtime_r` reads the
/// environment and a concurrent `setenv` would race with it. This process writes its environment only in
/// `main`, before any thread exists (`std::env::set_var` is `unsafe` for exactly this reason), so calling
/// the C library here is sound; it also follows DST the way every other program on the host does.
pub fn local_time(unix_seconds: i64) -> Option<LocalTime> {
    let t: libc::time_t = unix_seconds;
    // SAFETY: a zeroed `tm` is a valid value of a plain C struct.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid for the call; see above for why reading TZ cannot race with a write.
    let result = unsafe { libc::localtime_r(&t, &mut tm) };
    if result.is_null() {
        return None;
    }
    let weekday = u8::try_from((tm.tm_wday + 6) % 7).ok()?;
    let minute = u16::try_from(tm.tm_hour * 60 + tm.tm_min).ok()?;
    Some(LocalTime { weekday, minute })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(day: &str, hhmm: &str) -> LocalTime {
        LocalTime { weekday: parse_day(day).unwrap() as u8, minute: parse_time(hhmm).unwrap() }
    }

    #[test]
    fn weekday_nights() {
        let w = Window::parse("Mon-Fri 02:00-04:00").unwrap();
        assert!(w.contains(at("Mon", "02:00")));
        assert!(w.contains(at("Fri", "03:59")));
        assert!(!w.contains(at("Fri", "04:00")), "the end is exclusive");
        assert!(!w.contains(at("Tue", "01:59")));
        assert!(!w.contains(at("Sat", "02:30")));
        assert_eq!(w.to_string(), "Mon-Fri 02:00-04:00");
    }

    #[test]
    fn past_midnight_belongs_to_the_day_it_opened() {
        let w = Window::parse("Sat 22:00-02:00").unwrap();
        assert!(w.contains(at("Sat", "23:30")));
        assert!(w.contains(at("Sun", "01:59")));
        assert!(!w.contains(at("Sun", "22:30")));
        assert!(!w.contains(at("Sat", "01:00")), "Friday did not open it");
    }

    #[test]
    fn lists_wrapping_ranges_several_specs_and_every_day() {
        let w = Window::parse("sat,Sunday 00:00-24:00; Fri-Mon 12:00-13:00").unwrap();
        assert!(w.contains(at("Sun", "23:59")));
        assert!(w.contains(at("Mon", "12:30")));
        assert!(!w.contains(at("Tue", "12:30")));
        let daily = Window::parse("03:00-03:30").unwrap();
        for day in DAYS {
            assert!(daily.contains(at(day, "03:15")));
            assert!(!daily.contains(at(day, "03:30")));
        }
    }

    #[test]
    fn bad_windows_say_what_is_wrong() {
        for (text, needle) in [
            ("Mon-Fri 2-4", "not a time"),
            ("Mon-Fri 25:00-26:00", "not a time"),
            ("Mon-Fri 02:60-03:00", "not a time"),
            ("Mo 02:00-03:00", "not a day"),
            ("Mon 02:00", "not a time range"),
            ("Mon 02:00-02:00", "equal"),
            ("Mon 02:00-03:00;", "empty"),
            ("", "empty"),
        ] {
            let err = Window::parse(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn local_time_is_a_wall_clock_time() {
        // Whatever the zone of the machine running the tests, the result is a valid wall-clock time;
        // tests/fleet.rs runs the binary with TZ set to check the offset itself.
        let local = local_time(1_796_083_200).unwrap();
        assert!(local.weekday < 7 && local.minute < MINUTES_PER_DAY);
        assert_eq!(at("Mon", "00:00").to_string(), "Mon 00:00");
    }
}
