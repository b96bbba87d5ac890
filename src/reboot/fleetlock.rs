//! FleetLock client: the reboot semaphore protocol Fedora CoreOS's zincati speaks to airlock.
//!
//! `POST <url>/v1/pre-reboot` takes a slot before rebooting (200 = granted, anything else = not now) and
//! `POST <url>/v1/steady-state` gives it back once the host is up again; both send the header
//! `fleet-lock-protocol: true` and the body `{"client_params":{"id":…,"group":…}}`.

use std::time::Duration;

use anyhow::{Context, anyhow};
use serde::{Deserialize, Serialize};

/// How long one request may take before the reboot is deferred to the next run.
const TIMEOUT: Duration = Duration::from_secs(30);
/// The machine id file used as this host's identity unless `--fleetlock-id` says otherwise.
pub const MACHINE_ID: &str = "/etc/machine-id";

/// Where the semaphore lives and who this host is to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Client {
    /// Base URL of the FleetLock server, without the `/v1/…` path.
    pub url: String,
    /// Reboot group (the server keeps one semaphore per group).
    pub group: String,
    /// This host's identity (its machine id by default).
    pub id: String,
}

/// The server's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// 200: the slot is ours (pre-reboot) or released (steady-state).
    Granted,
    /// Any other status: the server's reason, e.g. another host holds the slot.
    Refused(String),
}

impl Client {
    /// Ask for the reboot slot.
    pub fn pre_reboot(&self) -> anyhow::Result<Answer> {
        self.post("/v1/pre-reboot")
    }

    /// Give the reboot slot back (a server treats releasing a slot not held as success).
    pub fn steady_state(&self) -> anyhow::Result<Answer> {
        self.post("/v1/steady-state")
    }

    fn post(&self, path: &str) -> anyhow::Result<Answer> {
        let url = format!("{}{path}", self.url.trim_end_matches('/'));
        let body = serde_json::json!({ "client_params": { "id": self.id, "group": self.group } }).to_string();
        let mut response = crate::http::agent(TIMEOUT)
            .post(&url)
            .header("fleet-lock-protocol", "true")
            .content_type("application/json")
            .send(body.as_str())
            .map_err(|e| anyhow!("FleetLock server {url}: {e}; check --fleetlock-url and that the server is up"))?;
        if response.status() == 200 {
            return Ok(Answer::Granted);
        }
        let text = response.body_mut().read_to_string().unwrap_or_default();
        Ok(Answer::Refused(reason(response.status().as_u16(), &text)))
    }
}

/// The server's error in one line: FleetLock servers answer `{"kind": …, "value": …}`.
fn reason(status: u16, body: &str) -> String {
    #[derive(Deserialize)]
    struct Error {
        kind: Option<String>,
        value: Option<String>,
    }
    let detail = match serde_json::from_str::<Error>(body) {
        Ok(Error { kind, value }) => [kind, value].into_iter().flatten().collect::<Vec<_>>().join(": "),
        Err(_) => body.lines().next().unwrap_or_default().chars().take(200).collect(),
    };
    if detail.is_empty() { format!("HTTP {status}") } else { format!("HTTP {status}: {detail}") }
}

/// This host's machine id (`/etc/machine-id`), the default FleetLock identity.
pub fn machine_id() -> anyhow::Result<String> {
    let id = std::fs::read_to_string(MACHINE_ID)
        .with_context(|| format!("reading {MACHINE_ID} for the FleetLock identity; pass --fleetlock-id ID instead"))?;
    let id = id.trim().to_string();
    if id.is_empty() {
        anyhow::bail!("{MACHINE_ID} is empty; run systemd-machine-id-setup or pass --fleetlock-id ID");
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_errors_become_one_line() {
        assert_eq!(
            reason(409, r#"{"kind":"failed_lock","value":"semaphore currently held by a"}"#),
            "HTTP 409: failed_lock: semaphore currently held by a"
        );
        assert_eq!(reason(500, "oops\nmore"), "HTTP 500: oops");
        assert_eq!(reason(404, ""), "HTTP 404");
    }
}
