//! The hosts a repository names at a commit, read from the commit's tree (no checkout): the
//! directories under `hosts/` and the names in `.gitops/hosts`, below the config root. Those that
//! never reported are the fleet view's missing hosts.

use std::path::Path;

use anyhow::{Context, anyhow};
use gix::ObjectId;

use crate::commit_id::short_id;
use crate::inventory::{HOSTS_DIR, HOSTS_LIST, repository_hosts};

/// A host list larger than this is not a host list.
const MAX_HOSTS_LIST: u64 = 4 * 1024 * 1024;

/// The hosts `commit` names below `root` (the config root, `--path`), sorted.
pub fn named_hosts(repo: &gix::Repository, commit: ObjectId, root: &Path) -> anyhow::Result<Vec<String>> {
    let at = short_id(commit);
    let tree = repo
        .find_commit(commit)
        .with_context(|| format!("reading commit {at}"))?
        .tree()
        .with_context(|| format!("reading the tree of commit {at}"))?;
    let lookup = |path: &Path| {
        tree.lookup_entry_by_path(path).with_context(|| format!("looking up {} in commit {at}", path.display()))
    };
    let mut dirs = Vec::new();
    let hosts_dir = root.join(HOSTS_DIR);
    if let Some(entry) = lookup(&hosts_dir)?.filter(|e| e.mode().is_tree()) {
        let hosts = entry.object().and_then(|o| o.try_into_tree());
        let hosts = hosts.with_context(|| format!("reading {} in commit {at}", hosts_dir.display()))?;
        for entry in hosts.iter() {
            let entry = entry.with_context(|| format!("reading {} in commit {at}", hosts_dir.display()))?;
            if entry.mode().is_tree() {
                dirs.push(entry.filename().to_string());
            }
        }
    }
    let list_path = root.join(HOSTS_LIST);
    let list = match lookup(&list_path)? {
        None => None,
        Some(entry) => {
            let object = entry.object().with_context(|| format!("reading {} in commit {at}", list_path.display()))?;
            if object.kind != gix::object::Kind::Blob || object.data.len() as u64 > MAX_HOSTS_LIST {
                return Err(anyhow!(
                    "{} in commit {at} is not a host list: one host name per line",
                    list_path.display()
                ));
            }
            let text = String::from_utf8(object.data.clone())
                .map_err(|_| anyhow!("{} in commit {at} is not UTF-8 text", list_path.display()))?;
            Some(text)
        }
    };
    repository_hosts(dirs, list.as_deref()).map_err(|e| anyhow!("{e} (in commit {at}); fix it in a new commit"))
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    #[test]
    fn directories_under_hosts_and_the_list_below_the_config_root() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path();
        git(repo, &["init", "-q"]);
        for file in ["fleet/hosts/web1/run.sh", "fleet/hosts/db1.example.com/run.sh", "hosts/elsewhere/run.sh"] {
            std::fs::create_dir_all(repo.join(file).parent().unwrap()).unwrap();
            std::fs::write(repo.join(file), "exit 0\n").unwrap();
        }
        std::fs::write(repo.join("fleet/hosts/README"), "a file, not a host\n").unwrap();
        std::fs::create_dir_all(repo.join("fleet/.gitops")).unwrap();
        std::fs::write(repo.join("fleet/.gitops/hosts"), "# all of them\nlb1\nweb1\n").unwrap();
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-qm", "fleet"]);
        let head = ObjectId::from_hex(git(repo, &["rev-parse", "HEAD"]).as_bytes()).unwrap();
        let opened = gix::open_opts(repo, gix::open::Options::isolated()).unwrap();
        assert_eq!(named_hosts(&opened, head, Path::new("fleet")).unwrap(), ["db1.example.com", "lb1", "web1"]);
        assert_eq!(named_hosts(&opened, head, Path::new("")).unwrap(), ["elsewhere"]);
        assert!(named_hosts(&opened, head, Path::new("nowhere")).unwrap().is_empty());

        std::fs::write(repo.join("fleet/.gitops/hosts"), "web 2\n").unwrap();
        git(repo, &["commit", "-qam", "a bad list"]);
        let head = ObjectId::from_hex(git(repo, &["rev-parse", "HEAD"]).as_bytes()).unwrap();
        let opened = gix::open_opts(repo, gix::open::Options::isolated()).unwrap();
        let err = named_hosts(&opened, head, Path::new("fleet")).unwrap_err().to_string();
        assert!(err.starts_with(".gitops/hosts line 1: \"web 2\" is not a host name"), "{err}");
    }
}
