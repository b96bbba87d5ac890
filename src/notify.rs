//! Notification targets and their payloads (Discord, Slack, generic JSON), built as plain data.

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::commit_id::short;
use crate::outcome::Outcome;
use crate::printable::printable;

/// Discord's limit on a message's `content`.
const DISCORD_CONTENT_MAX: usize = 2000;
/// How much of the log tail goes into a Slack code block (a section holds 3000 characters).
const SLACK_LOG_MAX: usize = 2500;
/// How much of the log tail goes into the generic JSON document.
pub const JSON_LOG_MAX: usize = 16 * 1024;

/// What one run did: the subject of every notification, of `gitops status` and of the metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunSummary {
    /// This host's name.
    pub host: String,
    /// The repository URL, passwords redacted.
    pub repository: String,
    /// Branch (or tag) name.
    pub branch: Option<String>,
    /// The commit deployed before this run.
    pub previous_commit: Option<String>,
    /// The remote commit this run looked at.
    pub commit: Option<String>,
    /// Its subject line.
    pub subject: Option<String>,
    /// Its author, `Name <email>`.
    pub author: Option<String>,
    /// How the run ended (its label in JSON).
    pub result: Outcome,
    /// The exit code of the run (`result`'s code, kept for readers of the JSON).
    pub exit_code: u8,
    /// One line saying what went wrong, if anything.
    pub error: Option<String>,
    /// Start (RFC 3339).
    pub started_at: String,
    /// End (RFC 3339).
    pub finished_at: String,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
    /// The tail of the entrypoint's log, when it ran.
    pub log_tail: Option<String>,
    /// True when `log_tail` is not the whole log.
    pub log_truncated: bool,
    /// A reboot this run started or saw completed ("rebooting for …", "rebooted for …").
    #[serde(default)]
    pub reboot: Option<String>,
    /// The commit live after this run: the revision `current` points at, whatever its entrypoint did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_commit: Option<String>,
    /// Since when the live commit is live (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_since: Option<String>,
    /// How the live commit's entrypoint ended: applied, failed or unfinished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_result: Option<crate::live::LiveResult>,
    /// The last commit whose entrypoint succeeded (the live one, unless that failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_commit: Option<String>,
    /// When `applied_commit` was applied (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<String>,
    /// When `commit` was committed (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commit_time: Option<String>,
    /// Commits in `commit` that the live commit does not have, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub commits_behind: Option<u64>,
    /// A due reboot that has not happened yet: the time it was due from (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reboot_pending_since: Option<String>,
    /// The ref the live commit came from, when it is not the branch (a testing branch, e.g. `testing/web-1`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployed_from: Option<String>,
    /// `gitops suspend` holds this host: since when (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_since: Option<String>,
    /// When the suspension ends by itself (RFC 3339); absent while it lasts until `gitops resume`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_until: Option<String>,
    /// Why the host is suspended, as given to `gitops suspend --reason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_reason: Option<String>,
    /// The Git remote that served the fetch (URL, redacted); None when no fetch happened (the probe said 304).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub served_by: Option<String>,
    /// What the change probe answered, when one is configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<crate::polling::record::ProbeAnswer>,
    /// This host's tags (`--tags`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Why the commit is held back, when the run was deferred.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deferred: Option<Deferral>,
    /// The automatic rollback this run did (or, on a run that stays rolled back, the last one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback: Option<crate::state::RollbackRecord>,
}

/// Deferral kinds that are not the plan but mistakes that will not end by themselves: `gate=prometheus`
/// on a host without `--prometheus`, canaries that match no host reporting to Prometheus, a gate whose
/// Prometheus cannot be asked. Held all the same (the gate cannot open), but the run fails (exit 2 or
/// 1, see `rollout::Hold::mistake`) and never counts as one that ended as planned.
pub const MISCONFIGURED: [&str; 3] = ["gate-unconfigured", "canary-unknown", "gate-unreachable"];

/// Why a run left the commit for later (exit 11).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Deferral {
    /// `wave`, `gate`, `halted`, `pause`, `suspend`, or a mistake: `gate-unconfigured`, `canary-unknown`.
    pub kind: String,
    /// What the log said: why, and until when if known.
    pub message: String,
    /// When the host goes (RFC 3339), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
}

impl RunSummary {
    /// A one-line human summary.
    pub fn headline(&self) -> String {
        let commit = self.commit.as_deref().map(short).unwrap_or("?");
        let branch = self.branch.as_deref().unwrap_or("?");
        let mut line = format!("{}: {} {branch}@{commit}", self.host, self.result);
        if let Some(subject) = &self.subject {
            line.push_str(&format!(" \"{}\"", printable(subject)));
        }
        if let Some(error) = &self.error {
            line.push_str(&format!(" — {}", printable(error)));
        }
        if let Some(reboot) = &self.reboot {
            line.push_str(&format!(" — {reboot}"));
        }
        if let Some(rollback) = self.rollback.as_ref().filter(|_| self.result == Outcome::RolledBack) {
            line.push_str(&format!(" — rolled back to {}", short(&rollback.to)));
        }
        // What a failed run left live, and what last worked, when that is not the commit named above.
        if self.result.is_failure()
            && let Some(live) = &self.live_commit
        {
            let result = self.live_result.map(|r| r.label()).unwrap_or("?");
            line.push_str(&format!(" — live: {} ({result})", short(live)));
            if let Some(applied) = self.applied_commit.as_deref().filter(|a| a != live) {
                line.push_str(&format!(", last applied {}", short(applied)));
            }
        }
        if let Some(from) = &self.deployed_from {
            line.push_str(&format!(" — from {}", printable(from)));
        }
        if self.suspended_since.is_some() {
            let reason = self.suspended_reason.as_deref().map(|r| format!(": {}", printable(r))).unwrap_or_default();
            line.push_str(&format!(" — suspended{reason}"));
        }
        line
    }

    /// Whether the run ended as planned: up-to-date, applied, or held back by the rollout policy or a
    /// suspension (not by a configuration mistake). A lock held by another run is neither this nor a failure.
    pub fn as_planned(&self) -> bool {
        match self.result {
            Outcome::UpToDate | Outcome::Applied => true,
            Outcome::Deferred => self.deferred.as_ref().is_none_or(|d| !MISCONFIGURED.contains(&d.kind.as_str())),
            _ => false,
        }
    }

    /// Record how the run ended.
    pub fn set_result(&mut self, outcome: Outcome) {
        self.result = outcome;
        self.exit_code = outcome.code();
    }
}

/// Where a notification goes and in which dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Discord webhook: multipart with payload_json and the log attached.
    Discord,
    /// Slack incoming webhook: JSON text and blocks.
    Slack,
    /// Any endpoint: the documented JSON document, optionally HMAC-signed.
    Json,
}

/// A configured notification target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Dialect.
    pub kind: Kind,
    /// URL (a secret: never logged, never stored).
    pub url: String,
}

impl Target {
    /// Parse `[discord:|slack:|json:]URL`, detecting the kind from the host when no prefix is given.
    pub fn parse(spec: &str) -> Result<Target, String> {
        let spec = spec.trim();
        let (kind, url) = match spec.split_once(':') {
            Some(("discord", url)) => (Some(Kind::Discord), url),
            Some(("slack", url)) => (Some(Kind::Slack), url),
            Some(("json", url)) => (Some(Kind::Json), url),
            _ => (None, spec),
        };
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err("a notification URL must start with https:// (or http://), optionally prefixed with discord:, slack: or json:".into());
        }
        let host = url.split("://").nth(1).and_then(|rest| rest.split(['/', ':', '?']).next()).unwrap_or("");
        let kind = kind.unwrap_or(if host.ends_with("discord.com") || host.ends_with("discordapp.com") {
            Kind::Discord
        } else if host == "hooks.slack.com" {
            Kind::Slack
        } else {
            Kind::Json
        });
        Ok(Target { kind, url: url.to_string() })
    }
}

/// Which runs are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NotifyOn {
    /// Every result except up-to-date.
    Change,
    /// Only failures (need-push, diverged, apply and verification failures, errors).
    Failure,
    /// Every run.
    Always,
}

impl NotifyOn {
    /// Whether `summary` is to be reported.
    pub fn wants(self, summary: &RunSummary) -> bool {
        if matches!(summary.result, Outcome::Usage | Outcome::Locked) {
            // A usage error or a skipped run (lock held) is not news for the fleet channel.
            return false;
        }
        match self {
            NotifyOn::Always => true,
            // A reboot is news even on an otherwise up-to-date run; a deferred run repeats every poll
            // until the commit goes out, and that apply is the news.
            NotifyOn::Change => {
                !matches!(summary.result, Outcome::UpToDate | Outcome::Deferred) || summary.reboot.is_some()
            }
            NotifyOn::Failure => summary.result.is_failure(),
        }
    }
}

/// The generic JSON document (documented in the README; `version` changes only with incompatible changes).
pub fn json_document(summary: &RunSummary) -> serde_json::Value {
    json!({
        "version": 1,
        "host": summary.host,
        "repository": summary.repository,
        "branch": summary.branch,
        "previous_commit": summary.previous_commit,
        "commit": summary.commit,
        "subject": summary.subject,
        "author": summary.author,
        "result": summary.result,
        "exit_code": summary.exit_code,
        "error": summary.error,
        "duration_ms": summary.duration_ms,
        "started_at": summary.started_at,
        "finished_at": summary.finished_at,
        "log_tail": summary.log_tail.as_deref().map(|log| tail(log, JSON_LOG_MAX)),
        "log_truncated": summary.log_truncated || summary.log_tail.as_deref().is_some_and(|l| l.len() > JSON_LOG_MAX),
        "reboot": summary.reboot,
        "served_by": summary.served_by,
        "probe": summary.probe,
        "live": summary.live_commit.as_ref().map(|commit| json!({
            "commit": commit,
            "result": summary.live_result,
            "since": summary.live_since,
        })),
        "applied": summary.applied_commit.as_ref().map(|commit| json!({
            "commit": commit,
            "applied_at": summary.applied_at,
        })),
        "rollback": summary.rollback.as_ref().map(|rollback| json!({
            "from": rollback.from,
            "to": rollback.to,
            "why": rollback.why,
            "at": rollback.started_at,
            "succeeded": rollback.succeeded,
        })),
    })
}

/// Slack's incoming-webhook body: a text fallback and blocks with the log tail in a code block.
pub fn slack_body(summary: &RunSummary) -> serde_json::Value {
    let mut blocks =
        vec![json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("*{}*", summary.headline())}})];
    if let Some(log) = summary.log_tail.as_deref().filter(|l| !l.trim().is_empty()) {
        let shown = tail(log, SLACK_LOG_MAX);
        blocks.push(json!({"type": "section", "text": {"type": "mrkdwn", "text": format!("```{shown}```")}}));
    }
    json!({"text": summary.headline(), "blocks": blocks})
}

/// Discord's `payload_json`: content within 2000 characters and an embed coloured by result.
pub fn discord_payload(summary: &RunSummary, attachment: Option<&str>) -> serde_json::Value {
    let mut content = summary.headline();
    if summary.log_truncated {
        content.push_str(" (log truncated: the attachment keeps its end)");
    }
    let content = truncate_chars(&content, DISCORD_CONTENT_MAX);
    let colour = match summary.result {
        Outcome::Applied => 0x2e_cc_71,
        Outcome::UpToDate | Outcome::Deferred => 0x95_a5_a6,
        Outcome::NeedPush | Outcome::Diverged | Outcome::RolledBack => 0xf3_9c_12,
        _ => 0xe7_4c_3c,
    };
    let field = |name: &str, value: Option<&str>| json!({"name": name, "value": value.unwrap_or("-"), "inline": true});
    let mut payload = json!({
        "content": content,
        "embeds": [{
            "title": format!("{} on {}", summary.result, summary.host),
            "color": colour,
            "fields": [
                field("branch", summary.branch.as_deref()),
                field("commit", summary.commit.as_deref()),
                field("previous", summary.previous_commit.as_deref()),
                field("exit code", Some(&summary.exit_code.to_string())),
            ],
        }],
    });
    if let Some(name) = attachment {
        payload["attachments"] = json!([{"id": 0, "filename": name}]);
    }
    payload
}

/// The last `max` bytes of `text`, cut at a character boundary.
pub fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

fn truncate_chars(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary() -> RunSummary {
        RunSummary {
            host: "web-1".into(),
            repository: "ssh://git@h/fleet".into(),
            branch: Some("main".into()),
            commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
            subject: Some("bump nginx".into()),
            result: Outcome::Applied,
            exit_code: 10,
            log_tail: Some("line\n".repeat(1000)),
            ..RunSummary::default()
        }
    }

    #[test]
    fn kinds_are_detected_or_forced() {
        assert_eq!(Target::parse("https://discord.com/api/webhooks/1/x").unwrap().kind, Kind::Discord);
        assert_eq!(Target::parse("https://hooks.slack.com/services/T/B/x").unwrap().kind, Kind::Slack);
        assert_eq!(Target::parse("https://example.com/hook").unwrap().kind, Kind::Json);
        let forced = Target::parse("discord:http://127.0.0.1:9/hook").unwrap();
        assert_eq!((forced.kind, forced.url.as_str()), (Kind::Discord, "http://127.0.0.1:9/hook"));
        assert!(Target::parse("ftp://x").is_err());
        assert!(Target::parse("slack:nope").is_err());
    }

    #[test]
    fn notify_on_policy() {
        let mut s = summary();
        for (outcome, change, failure) in [
            (Outcome::UpToDate, false, false),
            (Outcome::Applied, true, false),
            (Outcome::NeedPush, true, true),
            (Outcome::ApplyFailed, true, true),
            (Outcome::Runtime, true, true),
            (Outcome::Locked, false, false),
            (Outcome::Usage, false, false),
        ] {
            s.set_result(outcome);
            assert_eq!(NotifyOn::Change.wants(&s), change, "change {outcome}");
            assert_eq!(NotifyOn::Failure.wants(&s), failure, "failure {outcome}");
        }
    }

    #[test]
    fn a_failed_run_says_what_is_live_and_what_was_last_applied() {
        let mut s = summary();
        s.set_result(Outcome::ApplyFailed);
        s.error = Some("entrypoint run.sh exited with code 1".into());
        s.live_commit = s.commit.clone();
        s.live_result = Some(crate::live::LiveResult::Failed);
        s.applied_commit = Some("fedcba9876543210fedcba9876543210fedcba98".into());
        assert!(
            s.headline().ends_with("exited with code 1 — live: 0123456789ab (failed), last applied fedcba987654"),
            "{}",
            s.headline()
        );
        s.set_result(Outcome::Applied);
        assert!(!s.headline().contains("live:"), "an applied run names its commit once");
    }

    #[test]
    fn payloads_respect_limits() {
        let mut s = summary();
        s.subject = Some("x".repeat(5000));
        let discord = discord_payload(&s, Some("gitops.log"));
        assert!(discord["content"].as_str().unwrap().chars().count() <= DISCORD_CONTENT_MAX);
        assert_eq!(discord["attachments"][0]["filename"], "gitops.log");
        let slack = slack_body(&s);
        assert!(slack["blocks"][1]["text"]["text"].as_str().unwrap().len() <= SLACK_LOG_MAX + 6);
        let doc = json_document(&s);
        assert_eq!(doc["version"], 1);
        assert_eq!(doc["log_tail"].as_str().unwrap().len(), 5000);
        assert_eq!(tail("héllo", 4), "llo");
    }
}
