//! `.gitops/rollout` and `.gitops/hosts`: every line through the parsers hosts and the fleet view use, and
//! canaries that are no host of the repository.

use std::path::Path;

use super::snapshot::Snapshot;
use super::{Class, Finding, Report, Settings};
use crate::inventory::{self, HOSTS_DIR, HOSTS_LIST};
use crate::rollout::{self, POLICY_FILE, consider::MAX_POLICY};

/// The hosts the repository names (directories under `hosts/`, lines of `.gitops/hosts`), adding a finding
/// for each line of `.gitops/hosts` that is not a host name.
pub fn hosts(snapshot: &Snapshot, settings: &Settings, report: &mut Report) -> anyhow::Result<Vec<String>> {
    let dirs = snapshot.subdirectories(&settings.at(HOSTS_DIR));
    let path = settings.at(HOSTS_LIST);
    let mut listed = Vec::new();
    if let Some(text) = text(snapshot, &path, Class::Hosts, report)? {
        for item in inventory::listed_hosts(&text) {
            match item {
                Ok(name) => listed.push(name),
                Err((line, why)) => report.add(Finding::at(Class::Hosts, &path, Some(line), why)),
            }
        }
    }
    // Every name is good by now: the list's errors were taken out above.
    Ok(inventory::repository_hosts(dirs.into_iter().chain(listed), None).unwrap_or_default())
}

/// Every problem of `.gitops/rollout`, as hosts would read it from the commit, and each canary that is no host
/// of the repository (when the repository names its hosts).
pub fn rollout(snapshot: &Snapshot, settings: &Settings, hosts: &[String], report: &mut Report) -> anyhow::Result<()> {
    let path = settings.at(POLICY_FILE);
    let Some(text) = text(snapshot, &path, Class::Rollout, report)? else { return Ok(()) };
    let (policy, problems) = rollout::parse_all(&text);
    for problem in problems {
        report.add(Finding::at(
            Class::Rollout,
            &path,
            Some(problem.line),
            format!("{} (hosts refuse the commit with exit 31 until a later one fixes it)", problem.why),
        ));
    }
    if hosts.is_empty() {
        return Ok(());
    }
    // Where the canaries are, for the finding's line (the parser has read the line already).
    let line = text.lines().position(|l| l.split_once('=').is_some_and(|(key, _)| key.trim() == "canary"));
    for canary in &policy.canary_hosts {
        if !hosts.iter().any(|host| inventory::names_host(host, canary)) {
            report.add(Finding::at(
                Class::Rollout,
                &path,
                line.map(|n| n + 1),
                format!(
                    "canary {canary} is not a host of this repository (no {HOSTS_DIR}/{canary}/, not in {HOSTS_LIST}), so no host answers to it; fix the name, or list the host in {HOSTS_LIST}"
                ),
            ));
        }
    }
    Ok(())
}

/// The text of the small file at `path` as hosts read a policy (a blob of at most 64 KiB, UTF-8), adding a
/// finding when it is not one; None when there is no such file.
fn text(snapshot: &Snapshot, path: &Path, class: Class, report: &mut Report) -> anyhow::Result<Option<String>> {
    let Some(bytes) = snapshot.read(path)? else {
        if snapshot.get(path).is_some() {
            report.add(Finding::at(class, path, None, "is not a file; make it a KEY=VALUE text file"));
        }
        return Ok(None);
    };
    if bytes.len() as u64 > MAX_POLICY {
        report.add(Finding::at(
            class,
            path,
            None,
            format!("is over {MAX_POLICY} bytes, so hosts do not read it as a policy; it must be a small text file"),
        ));
        return Ok(None);
    }
    match String::from_utf8(bytes) {
        Ok(text) => Ok(Some(text)),
        Err(_) => {
            report.add(Finding::at(class, path, None, "is not UTF-8 text; save it as UTF-8"));
            Ok(None)
        }
    }
}
