//! Fold what ssh said into our one-line error; host-key refusals name the pinned and the offered fingerprints.

use std::fs;
use std::path::Path;

use anyhow::anyhow;
use ssh_key::{HashAlg, PublicKey};

use crate::config::HostKeys;

/// Explain a failed fetch with ssh's own messages (`ssh_log`, from `ssh -E`).
///
/// A refused host key becomes an explanation and the fix; any other ssh failure gets ssh's last line.
pub fn explain(error: anyhow::Error, ssh_log: &str, host_keys: &HostKeys) -> anyhow::Error {
    let text = ssh_log.trim();
    if text.is_empty() {
        return error;
    }
    log::debug!("ssh said: {text}");
    let changed = text.contains("REMOTE HOST IDENTIFICATION HAS CHANGED");
    if !changed && !text.contains("Host key verification failed") {
        let last = text.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or_default().trim().to_string();
        // ssh's own line says more than the transport's "failed to fill whole buffer".
        return anyhow!("{error}: {}", last.strip_prefix("ssh: ").map(|l| format!("ssh: {l}")).unwrap_or(last));
    }
    let offered = text
        .split_whitespace()
        .find(|word| word.starts_with("SHA256:"))
        .map(|word| word.trim_end_matches('.').to_string())
        .unwrap_or_else(|| "a key not in known_hosts".into());
    let file = match host_keys {
        HostKeys::Pinned(file) | HostKeys::TrustOnFirstUse(file) => Some(file.as_path()),
        HostKeys::SystemDefaults => None,
    };
    let pinned = file.map(fingerprints).filter(|f| !f.is_empty()).unwrap_or_else(|| "none".into());
    let where_ = file.map(|f| f.display().to_string()).unwrap_or_else(|| "ssh's known_hosts files".into());
    if changed {
        anyhow!(
            "host key changed: the server offered {offered} but {where_} pins {pinned}; nothing was fetched. If the server's key really changed, check the new fingerprint out of band and replace its line in {where_}"
        )
    } else {
        anyhow!(
            "host key not trusted: the server offered {offered}, which {where_} does not list; nothing was fetched. Pin it with --known-hosts (ssh-keyscan, then check the fingerprint out of band) or use --accept-new-host-key"
        )
    }
}

/// The SHA256 fingerprints of the keys in a known_hosts file, comma-separated.
fn fingerprints(path: &Path) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let mut out: Vec<String> = Vec::new();
    for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // [@marker] hosts keytype base64 [comment]: the key is the pair after the hosts.
        for pair in fields.windows(2) {
            if let Ok(key) = PublicKey::from_openssh(&format!("{} {}", pair[0], pair[1])) {
                out.push(key.fingerprint(HashAlg::Sha256).to_string());
                break;
            }
        }
    }
    out.join(", ")
}
