//! The hold `gitops suspend` puts on a host: one small file in the state directory that `sync` reads
//! before anything else, so a suspended host fetches, applies and reboots nothing.

use std::fs;
use std::io::Read;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::clock;
use crate::layout::Layout;
use crate::printable::printable;
use crate::state;

/// suspend.json stays far below this; anything larger is not ours.
const MAX_BYTES: u64 = 64 * 1024;

/// A suspension: who, since when, why and until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Suspension {
    /// When it began (RFC 3339).
    pub since: String,
    /// Who asked for it (the sudo user, else the login name, else the uid).
    pub by: String,
    /// Why, as given with `--reason`.
    #[serde(default)]
    pub reason: Option<String>,
    /// When it ends by itself (RFC 3339); None lasts until `gitops resume`.
    #[serde(default)]
    pub until: Option<String>,
}

impl Suspension {
    /// When it ends, as Unix seconds (None: until `gitops resume`).
    pub fn until_unix(&self) -> Option<i64> {
        self.until.as_deref().and_then(clock::unix_seconds).map(|t| t as i64)
    }

    /// Whether its `--for` has run out at `now` (Unix seconds).
    pub fn expired(&self, now: i64) -> bool {
        self.until_unix().is_some_and(|until| until <= now)
    }

    /// "suspended by alice since …: REASON; until 14:32 UTC" (or "; until gitops resume").
    pub fn describe(&self, now: i64) -> String {
        let reason = self.reason.as_deref().map(|r| format!(": {}", printable(r))).unwrap_or_default();
        let until = match self.until_unix() {
            Some(until) => format!("until {}", short_time(until, now)),
            None => "until gitops resume".to_string(),
        };
        format!("suspended by {} since {}{reason}; {until}", printable(&self.by), self.since)
    }
}

/// `14:32 UTC` when `at` is on the same day as `now`, else `2026-12-03 14:32 UTC`.
fn short_time(at: i64, now: i64) -> String {
    let (Ok(at), Ok(now)) = (OffsetDateTime::from_unix_timestamp(at), OffsetDateTime::from_unix_timestamp(now)) else {
        return format!("@{at}");
    };
    let clock = format!("{:02}:{:02} UTC", at.hour(), at.minute());
    if at.date() == now.date() { clock } else { format!("{} {clock}", at.date()) }
}

/// Who is running this command, for the record.
pub fn operator() -> String {
    ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|key| std::env::var(key).ok().filter(|v| !v.is_empty()))
        // SAFETY: geteuid has no preconditions.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::geteuid() }))
}

/// Read the suspension, if any. A file that is not one gitops wrote (symlink, FIFO, too large, not
/// parsing) is an error: the host stays held rather than guessing, and the message says how to clear it.
pub fn load(layout: &Layout) -> anyhow::Result<Option<Suspension>> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = layout.suspension();
    let unusable = |why: String| {
        anyhow!("{} {why}; run gitops resume (or remove the file) and suspend again if needed", path.display())
    };
    // O_NONBLOCK: a FIFO must not block the run. O_NOFOLLOW: the file is ours, not a link's target.
    let file = match fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => return Err(unusable("is a symbolic link".into())),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let meta = file.metadata().with_context(|| format!("reading {}", path.display()))?;
    if !meta.is_file() || meta.len() > MAX_BYTES {
        return Err(unusable(format!("is not a small regular file gitops wrote ({} bytes)", meta.len())));
    }
    let mut text = Vec::new();
    file.take(MAX_BYTES).read_to_end(&mut text).with_context(|| format!("reading {}", path.display()))?;
    let hold: Suspension = serde_json::from_slice(&text).map_err(|e| unusable(format!("does not parse ({e})")))?;
    if clock::unix_seconds(&hold.since).is_none() || (hold.until.is_some() && hold.until_unix().is_none()) {
        return Err(unusable("holds a time that is not RFC 3339".into()));
    }
    Ok(Some(hold))
}

/// The suspension in force at `now`; an expired one is over, and is removed when `tidy` (under the run lock).
pub fn active(layout: &Layout, now: i64, tidy: bool) -> anyhow::Result<Option<Suspension>> {
    let Some(hold) = load(layout)? else { return Ok(None) };
    if !hold.expired(now) {
        return Ok(Some(hold));
    }
    log::info!("the suspension {} has ended", hold.describe(now));
    if tidy {
        clear(layout)?;
    }
    Ok(None)
}

/// Write the suspension atomically (a run reads either the old or the new one).
pub fn save(layout: &Layout, hold: &Suspension) -> anyhow::Result<()> {
    let mut json = serde_json::to_vec_pretty(hold).context("serialising the suspension")?;
    json.push(b'\n');
    state::write_atomic(&layout.suspension(), &json)
}

/// Remove the suspension; false when there was none.
pub fn clear(layout: &Layout) -> anyhow::Result<bool> {
    let path = layout.suspension();
    match fs::remove_file(&path) {
        Ok(()) => {
            let _ = state::sync_dir(&layout.root);
            Ok(true)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_reason_and_end() {
        let hold = Suspension {
            since: "2026-12-01T10:00:00Z".into(),
            by: "alice".into(),
            reason: Some("kernel upgrade".into()),
            until: Some("2026-12-01T14:32:00Z".into()),
        };
        let now = clock::unix_seconds("2026-12-01T12:00:00Z").unwrap() as i64;
        assert_eq!(
            hold.describe(now),
            "suspended by alice since 2026-12-01T10:00:00Z: kernel upgrade; until 14:32 UTC"
        );
        assert!(!hold.expired(now));
        assert!(hold.expired(now + 3 * 3600));
        assert!(hold.describe(now - 86400).ends_with("until 2026-12-01 14:32 UTC"));
        let open = Suspension { reason: None, until: None, ..hold };
        assert_eq!(open.describe(now), "suspended by alice since 2026-12-01T10:00:00Z; until gitops resume");
        assert!(!open.expired(i64::MAX));
    }
}
