//! What state.json and the run summary say about polling: the last real fetch, the probe's validators and
//! what the probe answered (plain data, so that state and notifications need nothing else from polling).

use serde::{Deserialize, Serialize};

/// What state.json remembers about the last real fetch (left out when neither mirrors nor a probe are used).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FetchRecord {
    /// What was fetched: the primary's URL (redacted) and the ref; other settings make the record stale.
    pub source: String,
    /// The remote that served the fetch (URL, redacted).
    pub served_by: String,
    /// The branch (or tag) name fetched.
    pub branch: String,
    /// When a Git remote last answered a fetch (RFC 3339); kept only with a probe, which needs it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetched_at: Option<String>,
    /// The probe's validators seen just before that fetch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe: Option<Validators>,
}

/// The validators a probe answered with, kept in state.json for the next conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Validators {
    /// The probe URL they belong to (redacted).
    pub url: String,
    /// `ETag` of the last 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// `Last-Modified` of the last 2xx.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_modified: Option<String>,
}

/// What the change probe answered on a run (its label in JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProbeAnswer {
    /// 304: nothing moved (the run ended without a fetch unless something else was pending).
    NotModified,
    /// A 2xx: something may have moved; the run fetched.
    Changed,
    /// An error, a timeout or another status: the run fetched as without a probe.
    Unavailable,
}
