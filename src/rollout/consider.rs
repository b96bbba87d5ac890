//! The rollout step of a run: read the policy from the commit, ask the gate if there is one, keep this
//! host's record of the commit in state.json, and say whether to go now.

use std::path::Path;

use anyhow::{Context, anyhow};
use gix::ObjectId;

use super::{GateState, Hold, POLICY_FILE, Policy, decide, gate, slot};
use crate::clock::{now_unix, rfc3339};
use crate::outcome::{Failure, Outcome};
use crate::state::{RolloutRecord, State};

/// A policy file larger than this is not a policy.
pub const MAX_POLICY: u64 = 64 * 1024;

/// Who is asking, and about what.
pub struct Host<'a> {
    /// `--host`.
    pub name: &'a str,
    /// `--tags`.
    pub tags: &'a [String],
    /// The config root in the repository (`--path`).
    pub root: &'a Path,
    /// Where the gate asks (`--prometheus`).
    pub gate: Option<&'a gate::Source>,
}

/// Whether `commit` may be applied now. `Ok(None)`: go (no policy, or the policy lets this host go);
/// `Ok(Some(hold))`: defer. A bad policy is a verification-class failure: nothing is applied.
/// `state.rollout` is updated; the caller saves it.
pub fn consider(
    repo: &gix::Repository,
    commit: ObjectId,
    host: &Host<'_>,
    first_deploy: bool,
    state: &mut State,
) -> Result<Option<Hold>, Failure> {
    let hex = commit.to_string();
    if state.rollout.as_ref().is_some_and(|r| r.commit == hex && r.released) {
        // Released once (e.g. a retry of a failed apply): it does not queue again.
        return Ok(None);
    }
    let Some(text) = read_policy(repo, commit, host.root)? else {
        state.rollout = None;
        return Ok(None);
    };
    let policy: Policy = super::parse(&text).map_err(|e| Failure {
        outcome: Outcome::VerifyFailed,
        error: anyhow!(
            "{e} (in commit {}); nothing applied; fix the policy in a new commit",
            crate::commit_id::short(&hex)
        ),
    })?;
    let now = now_unix();
    let record = match state.rollout.take() {
        Some(record) if record.commit == hex => record,
        _ => RolloutRecord {
            commit: hex.clone(),
            first_seen: rfc3339(now).unwrap_or_default(),
            ..RolloutRecord::default()
        },
    };
    let mut record = record;
    let canary = policy.is_canary(host.name, host.tags);
    let gate_state = match (&policy.gate, canary || policy.pause) {
        (Some(g), false) => Some(match host.gate {
            Some(source) => gate::check(source, &policy.canary_hosts, &policy.canary_tags, &hex, g.min_canaries),
            None => GateState::Misconfigured(
                "gate-unconfigured",
                format!(
                    "{POLICY_FILE} says gate=prometheus but this host has no --prometheus to ask; set --prometheus (GITOPS_PROMETHEUS) on every host that is not a canary"
                ),
            ),
        }),
        _ => None,
    };
    if gate_state == Some(GateState::Open) && record.gate_opened.is_none() {
        record.gate_opened = rfc3339(now);
    }
    let seconds = |t: &Option<String>| t.as_deref().and_then(crate::clock::unix_seconds).map(|s| s as i64);
    let start = match policy.gate {
        Some(_) => seconds(&record.gate_opened),
        None => None,
    }
    .or_else(|| seconds(&Some(record.first_seen.clone())))
    .unwrap_or(now);
    let verdict = decide(&policy, canary, first_deploy, slot(host.name, &hex), start, gate_state.as_ref(), now);
    record.released = verdict.is_ok();
    state.rollout = Some(record);
    Ok(verdict.err())
}

/// What `rollback=` in the policy of `commit` says (None: no policy, or no such line). A policy that does
/// not parse says nothing here: the rollout step has refused it already, or it was never asked.
pub fn rollback_wanted(repo: &gix::Repository, commit: ObjectId, root: &Path) -> Option<bool> {
    let text = read_policy(repo, commit, root).ok().flatten()?;
    super::parse(&text).ok()?.rollback
}

/// The policy text in `commit`, if it has one.
fn read_policy(repo: &gix::Repository, commit: ObjectId, root: &Path) -> anyhow::Result<Option<String>> {
    let path = root.join(POLICY_FILE);
    let tree = repo
        .find_commit(commit)
        .context("reading the commit for its rollout policy")?
        .tree()
        .context("reading the commit's tree for its rollout policy")?;
    let Some(entry) = tree.lookup_entry_by_path(&path).context("looking up the rollout policy")? else {
        return Ok(None);
    };
    let object = entry.object().context("reading the rollout policy")?;
    if object.kind != gix::object::Kind::Blob || object.data.len() as u64 > MAX_POLICY {
        return Err(anyhow!("{} is not a small file; it must be a KEY=VALUE text file", path.display()));
    }
    String::from_utf8(object.data.clone()).map(Some).map_err(|_| anyhow!("{} is not UTF-8 text", path.display()))
}
