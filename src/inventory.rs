//! Inventory: which entrypoint runs on this host (a host override, else the shared one) inside which config root.
//!
//! Resolution is a pure function of the host's names and a "does this file exist" predicate, so the same code
//! answers for a checkout on disk (a real run) and for a commit's tree in the cache (`--dry-run`).

use std::path::{Component, Path, PathBuf};

/// Directory of per-host overrides inside the config root.
pub const HOSTS_DIR: &str = "hosts";

/// Where a host's configuration lives in a revision and what its entrypoint is told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inventory {
    /// Subdirectory of the repository that is the config root (`--path`); empty for the repository root.
    pub root: PathBuf,
    /// Host directories to look in, most specific first: `hosts/<fqdn>`, then `hosts/<short name>`.
    pub host_dirs: Vec<PathBuf>,
    /// The host's tags (`--tags`), in the order given.
    pub tags: Vec<String>,
    /// Name of the teardown script, looked up next to the entrypoint (`--teardown`).
    pub teardown: PathBuf,
}

impl Inventory {
    /// An inventory for the host called `hostname` (a FQDN or a short name).
    pub fn new(root: PathBuf, hostname: &str, tags: Vec<String>, teardown: PathBuf) -> Inventory {
        let host_dirs = host_names(hostname).into_iter().map(|name| Path::new(HOSTS_DIR).join(name)).collect();
        Inventory { root, host_dirs, tags, teardown }
    }

    /// The config root of a revision checked out at `checkout`: the entrypoint's working directory.
    pub fn workdir(&self, checkout: &Path) -> PathBuf {
        // Joining an empty path would add a trailing slash to what the scripts are given.
        if self.root.as_os_str().is_empty() { checkout.to_path_buf() } else { checkout.join(&self.root) }
    }

    /// Where to look for `entrypoint`, relative to the config root, first that exists wins.
    pub fn candidates(&self, entrypoint: &Path) -> Vec<PathBuf> {
        self.host_dirs.iter().map(|dir| dir.join(entrypoint)).chain([entrypoint.to_path_buf()]).collect()
    }

    /// The entrypoint for this host, relative to the config root: the first candidate `exists` reports,
    /// else the shared one (so that a "not found" error names what the operator most likely meant).
    pub fn resolve(&self, entrypoint: &Path, exists: impl Fn(&Path) -> bool) -> PathBuf {
        let candidates = self.candidates(entrypoint);
        let shared = entrypoint.to_path_buf();
        candidates.into_iter().find(|candidate| exists(candidate)).unwrap_or(shared)
    }

    /// The teardown script belonging to `entrypoint` (both relative to the config root): its sibling.
    pub fn teardown_for(&self, entrypoint: &Path) -> PathBuf {
        entrypoint.parent().unwrap_or(Path::new("")).join(&self.teardown)
    }

    /// `GITOPS_TAGS`: the tags joined by commas (empty when there are none).
    pub fn tags_env(&self) -> String {
        self.tags.join(",")
    }

    /// Says where the entrypoint came from, for logs and `--dry-run`.
    pub fn describe(&self, resolved: &Path) -> &'static str {
        if self.host_dirs.iter().any(|dir| resolved.starts_with(dir)) { "host override" } else { "shared" }
    }
}

/// Host directory names for `name`, most specific first: the name itself, then (for a FQDN) its first label.
pub fn host_names(name: &str) -> Vec<String> {
    let mut names = Vec::new();
    if is_plain_name(name) {
        names.push(name.to_string());
        if let Some((short, _domain)) = name.split_once('.')
            && is_plain_name(short)
        {
            names.push(short.to_string());
        }
    }
    names
}

/// The optional list of the fleet's hosts, relative to the config root: one host name per line, `#` comments.
/// Hosts that have no directory of their own under `hosts/` are named here, so that the fleet view can
/// tell a host that never reported from one that does not exist.
pub const HOSTS_LIST: &str = ".gitops/hosts";

/// The hosts a repository names: the directories under `hosts/` and the names in `.gitops/hosts`, sorted,
/// each once. An error names the line of `.gitops/hosts` that is not a host name.
pub fn repository_hosts(
    host_dirs: impl IntoIterator<Item = String>,
    hosts_list: Option<&str>,
) -> Result<Vec<String>, String> {
    let mut hosts: Vec<String> = host_dirs.into_iter().filter(|name| is_plain_name(name)).collect();
    for listed in listed_hosts(hosts_list.unwrap_or("")) {
        hosts.push(listed.map_err(|(line, why)| format!("{HOSTS_LIST} line {line}: {why}"))?);
    }
    hosts.sort();
    hosts.dedup();
    Ok(hosts)
}

/// The names in the text of `.gitops/hosts`, line by line: each name, or the line (from 1) that is not one
/// and why, so that `gitops check` can name every bad line.
pub fn listed_hosts(text: &str) -> impl Iterator<Item = Result<String, (usize, String)>> + '_ {
    text.lines().enumerate().filter_map(|(n, line)| {
        let name = line.split('#').next().unwrap_or("").trim();
        if name.is_empty() {
            None
        } else if !is_plain_name(name) || name.contains(char::is_whitespace) {
            Some(Err((n + 1, format!("{name:?} is not a host name; write one name per line"))))
        } else {
            Some(Ok(name.to_string()))
        }
    })
}

/// Whether the host that reports itself as `reported` (a FQDN or short name) is the host `named` in the
/// repository: `hosts/web1/` is web1.example.com's directory too, as for the entrypoint.
pub fn names_host(named: &str, reported: &str) -> bool {
    host_names(reported).iter().any(|name| name == named)
}

/// A name usable as one directory below `hosts/`.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\0'])
}

/// Parse `--tags a,b`: comma-separated, blanks dropped; a tag is letters, digits and `-_.:=`.
pub fn parse_tags(text: &str) -> Result<Vec<String>, String> {
    let mut tags: Vec<String> = Vec::new();
    for tag in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !tag.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:=".contains(c)) {
            return Err(format!("tag {tag:?} has characters other than letters, digits and -_.:="));
        }
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_string());
        }
    }
    Ok(tags)
}

/// A path that stays inside the repository: relative, no `..`.
pub fn is_inside_path(path: &str) -> bool {
    !path.is_empty() && Path::new(path).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory(host: &str) -> Inventory {
        Inventory::new(PathBuf::new(), host, vec![], PathBuf::from("teardown.sh"))
    }

    #[test]
    fn fqdn_then_short_name_then_shared() {
        let inv = inventory("web1.example.com");
        let run = Path::new("run.sh");
        assert_eq!(
            inv.candidates(run),
            [
                PathBuf::from("hosts/web1.example.com/run.sh"),
                PathBuf::from("hosts/web1/run.sh"),
                PathBuf::from("run.sh")
            ]
        );
        let all = |_: &Path| true;
        assert_eq!(inv.resolve(run, all), Path::new("hosts/web1.example.com/run.sh"));
        let short_only = |p: &Path| p == Path::new("hosts/web1/run.sh") || p == Path::new("run.sh");
        assert_eq!(inv.resolve(run, short_only), Path::new("hosts/web1/run.sh"));
        assert_eq!(inv.describe(&inv.resolve(run, short_only)), "host override");
        let shared_only = |p: &Path| p == Path::new("run.sh");
        assert_eq!(inv.resolve(run, shared_only), Path::new("run.sh"));
        assert_eq!(inv.describe(Path::new("run.sh")), "shared");
        // Nothing exists: the shared name, so the error names it.
        assert_eq!(inv.resolve(run, |_| false), Path::new("run.sh"));
    }

    #[test]
    fn short_host_names_have_one_candidate_and_odd_names_none() {
        assert_eq!(host_names("db1"), ["db1"]);
        assert_eq!(host_names("db1.lan"), ["db1.lan", "db1"]);
        assert!(host_names("").is_empty());
        assert!(host_names("..").is_empty());
        assert!(host_names("a/b").is_empty());
        assert_eq!(host_names(".hidden"), [".hidden"], "no empty short name");
        assert_eq!(inventory("..").candidates(Path::new("run.sh")), [PathBuf::from("run.sh")]);
    }

    #[test]
    fn teardown_sits_next_to_the_resolved_entrypoint() {
        let inv = inventory("web1");
        assert_eq!(inv.teardown_for(Path::new("hosts/web1/run.sh")), Path::new("hosts/web1/teardown.sh"));
        assert_eq!(inv.teardown_for(Path::new("run.sh")), Path::new("teardown.sh"));
        assert_eq!(inv.teardown_for(Path::new("bin/apply")), Path::new("bin/teardown.sh"));
    }

    #[test]
    fn tags() {
        assert_eq!(parse_tags("web, eu-west ,,web,role=db").unwrap(), ["web", "eu-west", "role=db"]);
        assert_eq!(parse_tags("").unwrap(), Vec::<String>::new());
        assert!(parse_tags("a b").is_err());
        assert!(parse_tags("x;rm -rf").is_err());
    }

    #[test]
    fn repository_hosts_join_directories_and_the_list() {
        let dirs = ["web2".to_string(), "db1".to_string()];
        let list = "# the fleet\nweb1\nweb2  # also a directory\n\nlb1.example.com\n";
        assert_eq!(repository_hosts(dirs, Some(list)).unwrap(), ["db1", "lb1.example.com", "web1", "web2"]);
        assert_eq!(repository_hosts(Vec::new(), None).unwrap(), Vec::<String>::new());
        let err = repository_hosts(Vec::new(), Some("web1\nweb 2\n")).unwrap_err();
        assert!(err.starts_with(".gitops/hosts line 2:"), "{err}");
        assert!(names_host("web1", "web1.example.com") && names_host("web1", "web1"));
        assert!(!names_host("web1.example.com", "web1") && !names_host("web", "web1"));
    }

    #[test]
    fn inside_paths() {
        assert!(is_inside_path("fleets/eu"));
        assert!(is_inside_path("./fleets"));
        assert!(!is_inside_path("../x"));
        assert!(!is_inside_path("/etc"));
        assert!(!is_inside_path(""));
    }
}
