//! The remotes a run may fetch from (the primary, then `--mirror`s in order) and the rule that moves on to the
//! next one: only when a remote cannot be reached, never when it answered something we do not like.

use crate::redact;

/// One Git remote a run may fetch from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    /// URL or path as configured (may hold credentials: only used to connect).
    pub url: String,
    /// The URL as shown in messages, state.json and reports.
    pub display_url: String,
    /// 0 for the primary, then 1, 2, … for the mirrors in the order they are tried.
    pub rank: usize,
}

impl Remote {
    /// The primary remote (`--repo-url`).
    pub fn primary(url: &str, display_url: &str) -> Remote {
        Remote { url: url.to_string(), display_url: display_url.to_string(), rank: 0 }
    }

    /// The `rank`th mirror.
    pub fn mirror(url: &str, rank: usize) -> Remote {
        Remote { url: url.to_string(), display_url: redact::url(url), rank }
    }

    /// "primary" or "mirror N", for messages.
    pub fn role(&self) -> String {
        if self.rank == 0 { "primary".into() } else { format!("mirror {}", self.rank) }
    }

    /// Whether this remote is on the same host as `other` (scheme, host and port), so that credentials meant
    /// for one may be sent to the other.
    pub fn same_host(&self, other: &Remote) -> bool {
        match (authority(&self.url), authority(&other.url)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        }
    }
}

/// `scheme://host[:port]` of a URL, without user information; None for paths and scp-like addresses.
fn authority(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split('/').next()?;
    let host = host.rsplit_once('@').map_or(host, |(_, host)| host);
    Some(format!("{}://{}", scheme.to_ascii_lowercase(), host.to_ascii_lowercase()))
}

/// Whether a fetch failed because the remote could not be reached (connection refused or reset, no route,
/// name not resolved, timeout, HTTP 5xx), as opposed to a remote that answered: a missing branch, a refused
/// host key or credentials, a damaged cache. Only the former makes a run try the next mirror: an answer is
/// the remote's word, and a host-key refusal must never be routed around.
pub fn unreachable(error: &anyhow::Error) -> bool {
    use std::io::ErrorKind;
    let io = error.chain().filter_map(|cause| cause.downcast_ref::<std::io::Error>()).any(|e| {
        matches!(
            e.kind(),
            ErrorKind::ConnectionRefused
                | ErrorKind::ConnectionReset
                | ErrorKind::ConnectionAborted
                | ErrorKind::NotConnected
                | ErrorKind::TimedOut
                | ErrorKind::HostUnreachable
                | ErrorKind::NetworkUnreachable
                | ErrorKind::AddrNotAvailable
        )
    });
    io || unreachable_text(&format!("{error:#}"))
}

/// The same judgement on an error's text: ssh, curl and the transports report most of these as messages.
fn unreachable_text(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    if text.contains("host key") {
        return false;
    }
    const MARKERS: &[&str] = &[
        "connection refused",
        "connection reset",
        "connection timed out",
        "timed out",
        "no route to host",
        "network is unreachable",
        "could not resolve",
        "couldn't resolve",
        "name or service not known",
        "temporary failure in name resolution",
        "couldn't connect",
        "failed to connect",
        "no answer within --fetch-timeout",
        "kex_exchange_identification",
        "connection closed by remote host",
    ];
    MARKERS.iter().any(|marker| text.contains(marker)) || server_error(&text)
}

/// An HTTP 5xx status in gix's words ("received http status 503").
fn server_error(text: &str) -> bool {
    text.match_indices("http status ").any(|(at, found)| text[at + found.len()..].starts_with('5'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_failures_to_reach_a_remote_move_on_to_a_mirror() {
        let io = anyhow::Error::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)).context("connecting");
        assert!(unreachable(&io));
        for text in [
            "connecting to git://h/x: Connection refused (os error 111)",
            "listing refs of ssh://h/x: ssh: connect to host h port 22: No route to host",
            "fetching from https://h/x: Received HTTP status 503",
            "fetching from ssh://h/x: no answer within --fetch-timeout 10s; nothing changed",
            "Could not resolve host: git.example.com",
        ] {
            assert!(unreachable(&anyhow::anyhow!("{text}")), "{text}");
        }
        for text in [
            "branch \"main\" does not exist on git://h/x; push it or fix --branch",
            "host key changed: the server offered SHA256:x but /k pins SHA256:y; nothing was fetched",
            "fetching from https://h/x: Received HTTP status 401",
            "fetching from https://h/x: Received HTTP status 404",
            "cache repository is damaged",
        ] {
            assert!(!unreachable(&anyhow::anyhow!("{text}")), "{text}");
        }
    }

    #[test]
    fn credentials_stay_on_their_host() {
        let primary = Remote::primary("https://git.example.com/fleet.git", "https://git.example.com/fleet.git");
        assert!(Remote::mirror("https://bot:t0ken@GIT.example.com/other.git", 1).same_host(&primary));
        assert!(!Remote::mirror("https://mirror.example.net/fleet.git", 1).same_host(&primary));
        assert!(!Remote::mirror("https://git.example.com:8443/fleet.git", 1).same_host(&primary));
        assert!(!Remote::mirror("git@git.example.com:fleet.git", 1).same_host(&primary));
        assert_eq!(Remote::mirror("https://bot:t0ken@m/x", 2).display_url, "https://bot:***@m/x");
        assert_eq!(Remote::mirror("git://m/x", 2).role(), "mirror 2");
    }
}
