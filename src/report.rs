//! After every run: record it for `gitops status`, write the metrics file, and notify without ever losing a message.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};

use crate::commit_id::short;
use crate::last_run;
use crate::layout::Layout;
use crate::notify::{self, Kind, NotifyOn, RunSummary, Target};
use crate::state::write_replace_public;

/// Messages kept per target while it is unreachable; older ones are dropped (with a log line).
const OUTBOX_MAX: usize = 20;
/// Tries per message within one run, with the delays between them.
const BACKOFF: [Duration; 2] = [Duration::from_millis(500), Duration::from_secs(1)];
/// Per-request time limit.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);
/// All notifications of a run together, retries included: unreachable receivers must not hold every
/// run up (what did not go out waits in the outbox for the next run).
pub const REPORT_DEADLINE: Duration = Duration::from_secs(30);

/// Reporting configuration.
#[derive(Debug, Clone)]
pub struct ReportSettings {
    /// Where notifications go.
    pub targets: Vec<Target>,
    /// Which runs are reported.
    pub notify_on: NotifyOn,
    /// HMAC key for `X-Gitops-Signature` on generic JSON notifications.
    pub secret: Option<Vec<u8>>,
    /// Prometheus textfile to rewrite after every run.
    pub metrics_file: Option<PathBuf>,
    /// Whether mirrors or a change probe are configured: only then does the textfile say which remote served.
    pub fetch_info: bool,
}

/// Record, export and announce a finished run; problems are logged, never fail the run.
pub fn after_run(layout: &Layout, settings: &ReportSettings, summary: &RunSummary) {
    let (record, summary) = last_run::record(layout, summary);
    if let Some(path) = &settings.metrics_file
        && let Err(e) =
            write_replace_public(path, crate::metrics::render(&record, &summary, settings.fetch_info).as_bytes())
    {
        log::warn!("writing metrics file {}: {e:#}", path.display());
    }
    let wanted = settings.notify_on.wants(&summary);
    let deadline = Instant::now() + REPORT_DEADLINE;
    for target in &settings.targets {
        deliver(layout, target, settings.secret.as_deref(), wanted.then_some(&summary), deadline);
    }
}

/// Send what is queued for `target`, oldest first, then `summary`; whatever fails waits in the outbox.
fn deliver(layout: &Layout, target: &Target, secret: Option<&[u8]>, summary: Option<&RunSummary>, deadline: Instant) {
    let outbox = layout.outbox().join(target_id(&target.url));
    let mut queued = queued_files(&outbox);
    if queued.is_empty() && summary.is_none() {
        return;
    }
    let mut reachable = true;
    for path in &queued {
        let Some(old) = fs::read(path).ok().and_then(|b| serde_json::from_slice::<RunSummary>(&b).ok()) else {
            let _ = fs::remove_file(path);
            continue;
        };
        match send(target, secret, &old, deadline) {
            Ok(()) => {
                log::info!("delivered a queued {:?} notification from {}", target.kind, old.finished_at);
                let _ = fs::remove_file(path);
            }
            Err(e) => {
                log::warn!("{:?} notification still undeliverable ({e}); keeping it queued", target.kind);
                reachable = false;
                break;
            }
        }
    }
    let Some(summary) = summary else { return };
    if reachable {
        match send(target, secret, summary, deadline) {
            Ok(()) => return,
            Err(e) => log::warn!("{:?} notification failed ({e}); queued for the next run", target.kind),
        }
    }
    if let Err(e) = enqueue(&outbox, summary) {
        log::warn!("queueing the {:?} notification: {e:#}", target.kind);
    }
    queued = queued_files(&outbox);
    let excess = queued.len().saturating_sub(OUTBOX_MAX);
    for old in &queued[..excess] {
        log::warn!(
            "dropping the oldest queued {:?} notification ({}): the queue holds {OUTBOX_MAX}",
            target.kind,
            old.display()
        );
        let _ = fs::remove_file(old);
    }
}

/// A stable name for a target that does not reveal its URL.
fn target_id(url: &str) -> String {
    Sha256::digest(url.as_bytes()).iter().take(8).map(|b| format!("{b:02x}")).collect()
}

fn queued_files(outbox: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(outbox)
        .map(|entries| {
            entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "json")).collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

fn enqueue(outbox: &Path, summary: &RunSummary) -> anyhow::Result<()> {
    fs::create_dir_all(outbox).with_context(|| format!("creating {}", outbox.display()))?;
    let nanos = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
    let path = outbox.join(format!("{nanos:024}.json"));
    crate::state::write_atomic(&path, &serde_json::to_vec(summary)?)
}

/// Deliver one message with retries, all before `deadline`; the error never contains the URL.
fn send(target: &Target, secret: Option<&[u8]>, summary: &RunSummary, deadline: Instant) -> Result<(), String> {
    let mut last = format!("the reporting deadline ({REPORT_DEADLINE:?} for all notifications of a run) passed");
    for attempt in 0..=BACKOFF.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match send_once(target, secret, summary, left.min(HTTP_TIMEOUT)) {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        if let Some(delay) = BACKOFF.get(attempt) {
            std::thread::sleep((*delay).min(deadline.saturating_duration_since(Instant::now())));
        }
    }
    Err(last)
}

fn send_once(target: &Target, secret: Option<&[u8]>, summary: &RunSummary, timeout: Duration) -> Result<(), String> {
    let agent = crate::http::agent(timeout);
    let request = agent.post(&target.url).header("User-Agent", crate::http::USER_AGENT);
    let response = match target.kind {
        Kind::Json => {
            let body = serde_json::to_vec(&notify::json_document(summary)).map_err(|e| e.to_string())?;
            let request = request.header("Content-Type", "application/json");
            let request = match secret {
                Some(key) => request.header("X-Gitops-Signature", format!("sha256={}", hmac_hex(key, &body))),
                None => request,
            };
            request.send(&body[..])
        }
        Kind::Slack => {
            let body = serde_json::to_vec(&notify::slack_body(summary)).map_err(|e| e.to_string())?;
            request.header("Content-Type", "application/json").send(&body[..])
        }
        Kind::Discord => {
            use ureq::unversioned::multipart::{Form, Part};
            let log = summary.log_tail.as_deref().unwrap_or("");
            let name = format!("gitops-{}.log", summary.commit.as_deref().map(short).unwrap_or("run"));
            let attach = !log.is_empty();
            let payload = notify::discord_payload(summary, attach.then_some(name.as_str())).to_string();
            let mut form = Form::new().text("payload_json", &payload);
            if attach {
                let part =
                    Part::bytes(log.as_bytes()).file_name(&name).mime_str("text/plain").map_err(|e| e.to_string())?;
                form = form.part("files[0]", part);
            }
            request.send(form)
        }
    };
    match response {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => Err(format!("HTTP {}", response.status())),
        // Only the error's kind: its text may quote the URL.
        Err(e) => Err(crate::redact::redact(&e.to_string())),
    }
}

/// Hex HMAC-SHA256 of `body` under `key`.
pub fn hmac_hex(key: &[u8], body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            hmac_hex(b"Jefe", b"what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn target_ids_hide_the_url() {
        let id = target_id("https://discord.com/api/webhooks/123/secret-token");
        assert_eq!(id.len(), 16);
        assert!(!id.contains("secret"));
        assert_ne!(id, target_id("https://discord.com/api/webhooks/123/other"));
    }
}
