//! Fleet-scale polling: mirrors that serve the branch when the primary remote is unreachable, and a
//! cacheable change probe that lets a no-op poll end without contacting any Git server.
//!
//! Both only change *where* a commit comes from or *whether* a fetch is needed; what is done with a
//! fetched commit (verification, rewind and diverge rules) is the same whichever remote served it.

pub mod mirrors;
pub mod probe;
pub mod record;

use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail};
use clap::Args;

use crate::checkout;
use crate::last_run;
use crate::layout::Layout;
use crate::outcome::Outcome;
use crate::parse::parse_duration;
use crate::polling::probe::{Answer, Standing};
use crate::polling::record::{FetchRecord, ProbeAnswer, Validators};
use crate::redact;
use crate::state::State;

pub use mirrors::Remote;

/// Polling flags of `gitops sync`: mirrors and the change probe.
#[derive(Debug, Args)]
pub struct PollingArgs {
    /// Fetch the same branch from this mirror when the primary cannot be reached (connect error, timeout,
    /// HTTP 5xx); repeatable, tried in order (env: space-separated).
    #[arg(long = "mirror", env = "GITOPS_MIRRORS", hide_env_values = true, value_delimiter = ' ', value_name = "URL")]
    pub mirrors: Vec<String>,

    /// Before contacting any Git remote, a conditional GET of this http(s) URL (e.g. the repository's
    /// info/refs served as a static file); 304 Not Modified ends the run up-to-date.
    #[arg(long, env = "GITOPS_PROBE_URL", hide_env_values = true, value_name = "URL")]
    pub probe_url: Option<String>,

    /// Fetch from the Git remote at least this often, whatever the probe says.
    #[arg(long, env = "GITOPS_PROBE_MAX_AGE", default_value = "1h", value_name = "DURATION")]
    pub probe_max_age: String,
}

/// The validated polling settings.
#[derive(Debug, Clone, Default)]
pub struct PollingSettings {
    /// Mirrors, in the order they are tried after the primary.
    pub mirrors: Vec<Remote>,
    /// The change probe, if configured.
    pub probe: Option<probe::Probe>,
}

impl PollingSettings {
    /// Validate the polling flags; every error names the flag, the reason and the fix.
    pub fn from_args(args: PollingArgs) -> anyhow::Result<PollingSettings> {
        let mut mirrors = Vec::new();
        for url in args.mirrors.iter().map(|u| u.trim()).filter(|u| !u.is_empty()) {
            if gix::url::parse(gix::bstr::BStr::new(url)).is_err() {
                bail!(
                    "--mirror {:?} is not a repository URL; use file://, git://, http(s)://, ssh:// or user@host:path",
                    redact::url(url)
                );
            }
            redact::register_url(url);
            mirrors.push(Remote::mirror(url, mirrors.len() + 1));
        }
        let max_age = parse_duration(&args.probe_max_age)
            .map_err(|e| anyhow!("--probe-max-age {:?}: {e}; use e.g. 30m or 1h", args.probe_max_age))?;
        if max_age.is_zero() {
            bail!("--probe-max-age 0 would never trust the probe; leave --probe-url unset instead, or use e.g. 1h");
        }
        let probe = match args.probe_url.as_deref().map(str::trim).filter(|u| !u.is_empty()) {
            None => None,
            Some(url) if url.starts_with("https://") || url.starts_with("http://") => {
                redact::register_url(url);
                Some(probe::Probe { url: url.to_string(), display_url: redact::url(url), max_age })
            }
            Some(url) => bail!(
                "--probe-url {:?} must be an http:// or https:// URL (e.g. https://git.example.com/fleet.git/info/refs)",
                redact::url(url)
            ),
        };
        Ok(PollingSettings { mirrors, probe })
    }

    /// Whether the run has anything to remember about polling (otherwise state.json is not touched for it).
    pub fn configured(&self) -> bool {
        self.probe.is_some() || !self.mirrors.is_empty()
    }
}

/// The ref a run fetches and where from, as the fetch record keeps it.
pub fn source_of(repo_url_display: &str, source_ref: Option<&str>) -> String {
    format!("{repo_url_display} {}", source_ref.unwrap_or("HEAD"))
}

/// How long ago an RFC 3339 time was; None when it does not parse or lies in the future.
fn age(at: &str) -> Option<Duration> {
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    let then = OffsetDateTime::parse(at, &Rfc3339).ok()?;
    Duration::try_from(OffsetDateTime::now_utc() - then).ok()
}

/// What a run does before contacting a Git remote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Before {
    /// The probe answered 304 and nothing is pending: the run ends up-to-date on the applied commit.
    Unchanged {
        /// The applied commit (full hex).
        commit: String,
        /// The branch the last fetch was of.
        branch: String,
    },
    /// Fetch from the Git remotes.
    Fetch {
        /// The probe's validators to record with the fetch (None: none known).
        validators: Option<Validators>,
        /// What the probe answered (None: no probe configured).
        answer: Option<ProbeAnswer>,
    },
}

/// The parts of the run's settings the probe needs.
#[derive(Debug, Clone, Copy)]
pub struct RunContext<'a> {
    /// What the run fetches ([`source_of`]).
    pub source: &'a str,
    /// `--retry` was passed.
    pub retry: bool,
    /// CA bundle for https (`--http-ca-file`).
    pub ca_file: Option<&'a Path>,
    /// `--fetch-timeout`: the probe never takes longer.
    pub fetch_timeout: Duration,
}

/// Ask the probe, if one is configured, whether this run may end without a fetch (see `probe` for the rule).
pub fn before_fetch(polling: &PollingSettings, run: RunContext<'_>, layout: &Layout, state: &State) -> Before {
    let Some(probe) = &polling.probe else { return Before::Fetch { validators: None, answer: None } };
    let record = state.fetch.as_ref();
    let previous = record.and_then(|r| r.probe.as_ref());
    match probe::ask(probe, previous, run.ca_file, run.fetch_timeout) {
        Answer::NotModified => {
            let applied = state.applied_commit.as_deref();
            let last_run = last_run::load(layout).last_run;
            let standing = Standing {
                record,
                source: run.source,
                probe_url: &probe.display_url,
                last_run_clean: last_run.is_some_and(|last| {
                    matches!(last.result, Outcome::UpToDate | Outcome::Applied) && last.commit.as_deref() == applied
                }),
                settled: applied.is_some()
                    && checkout::live_commit(layout).as_deref() == applied
                    && state.last_failure().is_none(),
                retry: run.retry,
                since_fetch: record.and_then(|r| r.fetched_at.as_deref()).and_then(age),
                max_age: probe.max_age,
            };
            match (probe::must_fetch(&standing), applied, record) {
                (None, Some(commit), Some(record)) => {
                    log::debug!(
                        "probe {}: 304 Not Modified; not contacting the Git server (last fetch {} from {}; the next one at the latest after --probe-max-age {:?})",
                        probe.display_url,
                        record.fetched_at.as_deref().unwrap_or("?"),
                        record.served_by,
                        probe.max_age
                    );
                    Before::Unchanged { commit: commit.to_string(), branch: record.branch.clone() }
                }
                (reason, _, _) => {
                    log::debug!(
                        "probe {}: 304 Not Modified, but {}: fetching",
                        probe.display_url,
                        reason.unwrap_or("nothing is applied yet")
                    );
                    Before::Fetch { validators: previous.cloned(), answer: Some(ProbeAnswer::NotModified) }
                }
            }
        }
        Answer::Changed(validators) => {
            log::debug!(
                "probe {}: changed (ETag {}, Last-Modified {}); fetching",
                probe.display_url,
                validators.etag.as_deref().unwrap_or("-"),
                validators.last_modified.as_deref().unwrap_or("-")
            );
            if validators.etag.is_none() && validators.last_modified.is_none() {
                log::warn!(
                    "probe {} answers without ETag or Last-Modified, so it can never say \"not modified\"; serve it as a static file (see Large fleets in the README)",
                    probe.display_url
                );
            }
            Before::Fetch { validators: Some(validators), answer: Some(ProbeAnswer::Changed) }
        }
        Answer::Unavailable(why) => {
            log::info!("probe {}: {why}; fetching from the Git remote", probe.display_url);
            Before::Fetch { validators: None, answer: Some(ProbeAnswer::Unavailable) }
        }
    }
}

/// Record a real fetch in `state` (in memory); true when state.json must be written for it. Without mirrors
/// or a probe nothing is recorded, so the no-op poll writes nothing.
pub fn after_fetch(
    polling: &PollingSettings,
    state: &mut State,
    source: &str,
    served_by: &Remote,
    branch: &str,
    validators: Option<Validators>,
) -> bool {
    if !polling.configured() {
        return state.fetch.take().is_some();
    }
    let record = FetchRecord {
        source: source.to_string(),
        served_by: served_by.display_url.clone(),
        branch: branch.to_string(),
        fetched_at: polling.probe.as_ref().map(|_| crate::clock::now()),
        probe: validators,
    };
    let changed = state.fetch.as_ref() != Some(&record);
    state.fetch = Some(record);
    changed
}
