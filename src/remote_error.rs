//! A failure to reach a remote, as gix reports it (several layers deep, sometimes misleading: a bare
//! repository path "has no .git"), turned into one line: the reason and the fix. The caller's context
//! names the URL. The original chain stays underneath, for the mirror logic that inspects it.

use std::fmt;
use std::io::ErrorKind;
use std::path::Path;

/// An error whose message says it all: `Failure::message` stops at it instead of joining its causes.
#[derive(Debug)]
pub struct Explained {
    /// The one line.
    line: String,
    /// What gix said, kept as the source.
    cause: Box<dyn std::error::Error + Send + Sync + 'static>,
}

impl fmt::Display for Explained {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

impl std::error::Error for Explained {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.cause)
    }
}

/// `error` from connecting to or listing `url` (as configured), explained when the cause is known.
pub fn explain(error: anyhow::Error, url: &str) -> anyhow::Error {
    match reason(&error, url) {
        Some(line) => anyhow::Error::new(Explained { line, cause: error.into() }),
        None => error,
    }
}

/// The reason and the fix, when the cause is one an operator commonly meets.
fn reason(error: &anyhow::Error, url: &str) -> Option<String> {
    if let Some(path) = local_path(url) {
        let path = Path::new(path);
        if !path.exists() {
            return Some(format!(
                "{} does not exist; check --repo-url (the path or file:// URL of a Git repository)",
                path.display()
            ));
        }
        let bare = path.join("HEAD").is_file() && path.join("objects").is_dir();
        if !bare && !path.join(".git").exists() {
            return Some(format!(
                "{} is not a Git repository (no HEAD and objects/, no .git); point --repo-url at a bare repository or a clone",
                path.display()
            ));
        }
        return None;
    }
    let io = error.chain().filter_map(|cause| cause.downcast_ref::<std::io::Error>()).map(|e| e.kind()).next();
    let text = format!("{error:#}").to_ascii_lowercase();
    let said = |markers: &[&str]| markers.iter().any(|m| text.contains(m));
    if io == Some(ErrorKind::ConnectionRefused)
        || said(&["connection refused", "couldn't connect", "could not connect"])
    {
        return Some("the connection was refused; check that the Git server runs and the URL's host and port".into());
    }
    if said(&["could not resolve", "couldn't resolve", "name or service not known", "failed to lookup address"]) {
        return Some("the host name does not resolve; check the URL and this host's DNS".into());
    }
    if said(&["no route to host", "network is unreachable"]) {
        return Some("the network cannot reach the server; check routes and firewalls".into());
    }
    if said(&["401", "403", "authentication failed", "authentication required"]) && text.contains("http") {
        return Some(
            "the server refused the credentials; check --http-token-file (and --http-user) or the deploy token's rights".into(),
        );
    }
    if said(&["404", "repository not found", "not found"]) && text.contains("http") {
        return Some("the server has no repository at this URL (HTTP 404); check the path".into());
    }
    None
}

/// The path of a local repository URL (a path, or file://), None for network URLs.
fn local_path(url: &str) -> Option<&str> {
    if let Some(path) = url.strip_prefix("file://") {
        return Some(path);
    }
    // scp-like `host:path` has a colon before any slash; a local path has none or a slash first.
    let scp_like = url.find(':').is_some_and(|colon| url.find('/').is_none_or(|slash| colon < slash));
    (!url.contains("://") && !scp_like).then_some(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_paths_are_told_from_network_urls() {
        assert_eq!(local_path("file:///srv/fleet.git"), Some("/srv/fleet.git"));
        assert_eq!(local_path("/srv/fleet.git"), Some("/srv/fleet.git"));
        assert_eq!(local_path("fleet"), Some("fleet"));
        assert_eq!(local_path("git@github.com:org/fleet.git"), None);
        assert_eq!(local_path("https://github.com/org/fleet.git"), None);
        assert_eq!(local_path("ssh://git@h:22/fleet.git"), None);
    }

    #[test]
    fn the_explained_line_hides_the_chain_but_keeps_it_as_the_source() {
        let io = std::io::Error::new(ErrorKind::ConnectionRefused, "Connection refused (os error 111)");
        let error = explain(anyhow::Error::new(io).context("Could not connect to git server"), "git://127.0.0.1:1/x");
        assert!(error.to_string().starts_with("the connection was refused;"), "{error}");
        assert!(error.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some()), "the io error is still there");
        let missing = explain(anyhow::anyhow!("Could not retrieve metadata of \"/nope/.git\""), "file:///nope/x.git");
        assert_eq!(
            missing.to_string(),
            "/nope/x.git does not exist; check --repo-url (the path or file:// URL of a Git repository)"
        );
    }
}
