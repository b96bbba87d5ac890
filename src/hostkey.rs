//! ssh for Git: the command line that pins host keys, and what ssh said folded into our one-line error
//! (host-key refusals name the pinned and the offered fingerprints).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::anyhow;
use ssh_key::{HashAlg, PublicKey};

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

/// How the server's host key is checked; never "not at all".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeys {
    /// Only keys in this known_hosts file.
    Pinned(PathBuf),
    /// The first key seen is written to this file and pinned from then on.
    TrustOnFirstUse(PathBuf),
    /// ssh's own known_hosts files, strictly.
    SystemDefaults,
}

/// The ssh command line: batch mode, checked host keys, only the given identity, messages to `log`.
pub fn ssh_command(key: Option<&Path>, host_keys: &HostKeys, log: &Path) -> String {
    let strict = match host_keys {
        HostKeys::TrustOnFirstUse(_) => "accept-new",
        HostKeys::Pinned(_) | HostKeys::SystemDefaults => "yes",
    };
    let mut cmd = format!(
        "ssh -E {} -o BatchMode=yes -o StrictHostKeyChecking={strict} -o ConnectTimeout=30 -o ServerAliveInterval=15",
        shell_quote(&log.to_string_lossy())
    );
    if let Some(key) = key {
        cmd.push_str(" -o IdentitiesOnly=yes -i ");
        cmd.push_str(&shell_quote(&key.to_string_lossy()));
    }
    if let HostKeys::Pinned(file) | HostKeys::TrustOnFirstUse(file) = host_keys {
        cmd.push_str(" -o UserKnownHostsFile=");
        cmd.push_str(&shell_quote(&file.to_string_lossy()));
        cmd.push_str(" -o GlobalKnownHostsFile=/dev/null");
    }
    cmd
}

/// Quote for a POSIX shell (gix runs the ssh command through `sh -c`).
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_pins_keys_and_quotes_paths() {
        let cmd =
            ssh_command(Some(Path::new("/k/it's key")), &HostKeys::Pinned("/k/known".into()), Path::new("/s/ssh.log"));
        assert!(cmd.contains("StrictHostKeyChecking=yes"));
        assert!(cmd.contains("-i '/k/it'\\''s key'"));
        assert!(cmd.contains("UserKnownHostsFile='/k/known'"));
        assert!(ssh_command(None, &HostKeys::SystemDefaults, Path::new("/s/l")).contains("StrictHostKeyChecking=yes"));
        let tofu = ssh_command(None, &HostKeys::TrustOnFirstUse("/s/known_hosts".into()), Path::new("/s/l"));
        assert!(tofu.contains("StrictHostKeyChecking=accept-new") && tofu.contains("/s/known_hosts"));
        assert!(!tofu.contains("=no"));
    }
}
