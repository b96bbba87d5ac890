//! The change probe: a conditional GET (`If-None-Match` / `If-Modified-Since`) of a URL that changes whenever
//! the branch moves, asked before any Git remote. Only a 304 can end a run early, and only when the last run
//! was a clean success, nothing is pending and a real fetch happened within `--probe-max-age`: a stale or
//! lying probe can delay an update by at most that long, never cause one, and never bypass verification
//! (a commit is only ever applied after a real fetch).

use std::path::Path;
use std::time::Duration;

use crate::polling::record::{FetchRecord, Validators};
use anyhow::{Context, anyhow};

/// Longest a probe request may take before the run falls back to a normal fetch.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// A configured probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    /// The URL asked (may hold credentials: only used to connect).
    pub url: String,
    /// The URL as shown in messages and state.json.
    pub display_url: String,
    /// A real fetch happens at least this often.
    pub max_age: Duration,
}

/// What the probe said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 304: nothing changed since the validators sent.
    NotModified,
    /// A 2xx with (possibly new) validators: something may have changed.
    Changed(Validators),
    /// An error, a timeout or any other status: the probe knows nothing; fetch.
    Unavailable(String),
}

/// What a run knows, before asking the probe, about whether a 304 may end it (all plain data).
#[derive(Debug, Clone, Copy)]
pub struct Standing<'a> {
    /// The record of the last real fetch, if any.
    pub record: Option<&'a FetchRecord>,
    /// What this run fetches (the primary's URL and the ref).
    pub source: &'a str,
    /// The probe's URL (redacted).
    pub probe_url: &'a str,
    /// The last run ended up-to-date or applied, on the applied commit.
    pub last_run_clean: bool,
    /// The live revision is the applied commit and no failed commit awaits a retry.
    pub settled: bool,
    /// `--retry` was passed.
    pub retry: bool,
    /// How long ago the last real fetch was (None: unknown).
    pub since_fetch: Option<Duration>,
    /// `--probe-max-age`.
    pub max_age: Duration,
}

/// Why a run must fetch even though the probe may say 304; None when a 304 may end it.
pub fn must_fetch(standing: &Standing<'_>) -> Option<&'static str> {
    let Some(record) = standing.record else { return Some("no fetch is recorded yet") };
    if record.source != standing.source {
        return Some("the repository or ref changed since the last fetch");
    }
    if record.probe.as_ref().is_none_or(|v| v.url != standing.probe_url) {
        return Some("the probe has no validators for this URL yet");
    }
    if !standing.last_run_clean {
        return Some("the last run did not end up-to-date or applied");
    }
    if !standing.settled {
        return Some("the live revision is not the applied commit, or a failed commit awaits a retry");
    }
    if standing.retry {
        return Some("--retry was passed");
    }
    match standing.since_fetch {
        Some(age) if age < standing.max_age => None,
        _ => Some("the last real fetch is older than --probe-max-age"),
    }
}

/// Ask the probe, conditionally on `previous`; never fails (an error is an [`Answer::Unavailable`]).
pub fn ask(probe: &Probe, previous: Option<&Validators>, ca_file: Option<&Path>, limit: Duration) -> Answer {
    match request(probe, previous, ca_file, limit.min(PROBE_TIMEOUT)) {
        Ok(answer) => answer,
        Err(e) => Answer::Unavailable(crate::redact::redact(&format!("{e:#}"))),
    }
}

fn request(
    probe: &Probe,
    previous: Option<&Validators>,
    ca_file: Option<&Path>,
    timeout: Duration,
) -> anyhow::Result<Answer> {
    let roots = match ca_file {
        Some(file) => {
            let pem = std::fs::read(file).with_context(|| format!("reading --http-ca-file {}", file.display()))?;
            let certs: Vec<_> = ureq::tls::parse_pem(&pem)
                .filter_map(|item| match item {
                    Ok(ureq::tls::PemItem::Certificate(cert)) => Some(cert),
                    _ => None,
                })
                .collect();
            ureq::tls::RootCerts::new_with_certs(&certs)
        }
        None => ureq::tls::RootCerts::PlatformVerifier,
    };
    let agent = crate::http::agent_trusting(timeout, roots);
    let mut request = agent.get(&probe.url).header("User-Agent", crate::http::USER_AGENT);
    if let Some(previous) = previous.filter(|v| v.url == probe.display_url) {
        if let Some(etag) = &previous.etag {
            request = request.header("If-None-Match", etag);
        }
        if let Some(modified) = &previous.last_modified {
            request = request.header("If-Modified-Since", modified);
        }
    }
    let response = request.call().map_err(|e| anyhow!("{e}"))?;
    let status = response.status().as_u16();
    if status == 304 {
        return Ok(Answer::NotModified);
    }
    if !(200..300).contains(&status) {
        return Ok(Answer::Unavailable(format!("HTTP {status}")));
    }
    let header = |name: &str| response.headers().get(name).and_then(|v| v.to_str().ok()).map(String::from);
    // The body is not needed: the validators say whether it changed.
    Ok(Answer::Changed(Validators {
        url: probe.display_url.clone(),
        etag: header("etag"),
        last_modified: header("last-modified"),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(probe_url: &str) -> FetchRecord {
        FetchRecord {
            source: "git://h/x HEAD".into(),
            served_by: "git://h/x".into(),
            branch: "main".into(),
            fetched_at: Some("2026-01-01T00:00:00Z".into()),
            probe: Some(Validators { url: probe_url.into(), etag: Some("\"1\"".into()), last_modified: None }),
        }
    }

    #[test]
    fn a_304_ends_a_run_only_after_a_clean_recent_fetch_with_nothing_pending() {
        let rec = record("http://p/info/refs");
        let clean = Standing {
            record: Some(&rec),
            source: "git://h/x HEAD",
            probe_url: "http://p/info/refs",
            last_run_clean: true,
            settled: true,
            retry: false,
            since_fetch: Some(Duration::from_secs(60)),
            max_age: Duration::from_secs(3600),
        };
        assert_eq!(must_fetch(&clean), None);
        let cases: [(Standing<'_>, &str); 8] = [
            (Standing { record: None, ..clean }, "no fetch"),
            (Standing { source: "git://h/x refs/heads/prod", ..clean }, "ref changed"),
            (Standing { probe_url: "http://q/info/refs", ..clean }, "no validators"),
            (Standing { last_run_clean: false, ..clean }, "last run"),
            (Standing { settled: false, ..clean }, "retry"),
            (Standing { retry: true, ..clean }, "--retry"),
            (Standing { since_fetch: Some(Duration::from_secs(3600)), ..clean }, "older"),
            (Standing { since_fetch: None, ..clean }, "older"),
        ];
        for (standing, why) in cases {
            let reason = must_fetch(&standing).unwrap_or_else(|| panic!("{why}: may not end early"));
            assert!(reason.contains(why), "{why}: {reason}");
        }
    }
}
