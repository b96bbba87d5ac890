//! What state.json keeps about reboots: requests, the reboot in flight, a FleetLock slot held.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::fleetlock;
use crate::commit_id::short;

/// The repository's request file, relative to the config root.
pub const REPO_REQUEST: &str = ".gitops/reboot";

/// Where a reboot request came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// The `.gitops/reboot` file in the config root.
    Repo,
    /// The entrypoint, through `$GITOPS_REBOOT_REQUEST`.
    Entrypoint,
}

/// "Reboot if this host booted before `not_before`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// Who asked.
    pub source: Source,
    /// T, RFC 3339 in UTC.
    pub not_before: String,
    /// The commit that carried (repo) or made (entrypoint) the request.
    pub commit: Option<String>,
    /// The reason given with it, if any.
    pub reason: Option<String>,
}

impl Request {
    /// The same request: same source and same T (the reason and commit do not make it a new one).
    pub fn same(&self, other: &Request) -> bool {
        self.source == other.source && self.not_before == other.not_before
    }

    /// T, when it parses (it was written by us, so it does unless state.json was edited).
    pub fn time(&self) -> Option<OffsetDateTime> {
        OffsetDateTime::parse(&self.not_before, &Rfc3339).ok()
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reboot request ")?;
        if let Some(reason) = &self.reason {
            write!(f, "{reason:?} ")?;
        }
        let source = match self.source {
            Source::Repo => REPO_REQUEST,
            Source::Entrypoint => "the entrypoint",
        };
        write!(f, "from {source}")?;
        if let Some(commit) = &self.commit {
            write!(f, " of {}", short(commit))?;
        }
        write!(f, " (hosts booted before {})", self.not_before)
    }
}

/// The reboot gitops last started, and what became of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootRecord {
    /// The request it was for.
    pub request: Request,
    /// The boot in which it was started.
    pub boot_id: String,
    /// When the reboot command ran (RFC 3339).
    pub started_at: String,
    /// Why the reboot command failed; such a reboot is tried again on the next run.
    #[serde(default)]
    pub error: Option<String>,
    /// The boot seen after it, once the host is back.
    #[serde(default)]
    pub rebooted_into: Option<String>,
    /// That boot's start time (RFC 3339).
    #[serde(default)]
    pub booted_at: Option<String>,
}

/// A FleetLock slot this host holds, to give back once it has rebooted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FleetLockHold {
    /// The server and identity it was taken with (released there, even if the configuration changed since).
    pub client: fleetlock::Client,
    /// The boot in which it was taken.
    pub boot_id: String,
    /// When (RFC 3339).
    pub since: String,
}

/// Reboot bookkeeping in state.json.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebootState {
    /// The entrypoint's request, kept until it is satisfied (a deferred reboot waits here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<Request>,
    /// The last reboot gitops started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last: Option<RebootRecord>,
    /// A FleetLock slot held across a reboot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleetlock: Option<FleetLockHold>,
}

impl RebootState {
    /// Nothing recorded: state.json leaves the section out.
    pub fn is_empty(&self) -> bool {
        self.pending.is_none() && self.last.is_none() && self.fleetlock.is_none()
    }
}
