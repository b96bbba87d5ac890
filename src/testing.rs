//! Per-host testing branches (`--testing-branch`, as comin has them): which commit this host runs —
//! the testing branch's tip while it descends from the branch's tip, else the branch's tip — and when
//! going back from a testing commit to the branch is allowed although it moves backwards or sideways.

use gix::ObjectId;

use crate::commit_id::short_id;
use crate::config::TestingBranch;
use crate::decide::ancestry::compare;
use crate::decide::{Allowed, Decision, History, Refusal, Why};
use crate::fetch::{self, Fetched};
use crate::state::State;

/// The commit this run decides about and where it comes from.
#[derive(Debug, Clone)]
pub struct Route {
    /// What was fetched, with `commit` the target (the testing tip, or the branch tip); branch and ref
    /// stay the configured ones (the entrypoint's `GITOPS_BRANCH`, the metrics' label).
    pub fetched: Fetched,
    /// The testing branch's name when the target is its tip; None for the branch.
    pub testing: Option<String>,
    /// The branch's tip, when the target is a testing commit (recorded as `testing_base`).
    pub base: Option<ObjectId>,
    /// The live commit came from a testing branch and the target is the branch's tip.
    pub leaving: bool,
    /// The branch moved behind (or away from) what this host already ran: refused whatever the testing branch says.
    pub branch_refused: Option<Refusal>,
}

/// Pick the target. Without `--testing-branch` and without a live testing commit, this is the branch
/// tip and reads nothing: the no-op poll costs what it did.
pub fn route(
    repo: &gix::Repository,
    testing: Option<&TestingBranch>,
    fetched: Fetched,
    deployed: Option<ObjectId>,
    state: &State,
    allowed: Allowed,
) -> anyhow::Result<Route> {
    let testing_base = state.testing_base.as_deref().and_then(|hex| ObjectId::from_hex(hex.as_bytes()).ok());
    let branch_tip = fetched.commit;
    let chosen = match (testing, fetched.testing) {
        (Some(testing), Some(tip)) => pick(repo, testing, tip, branch_tip, deployed, testing_base)?,
        _ => None,
    };
    let leaving = testing_base.is_some() && chosen.is_none();
    // What the branch must not fall behind: the tip a live testing commit was deployed on, else the
    // deployed commit (when the target is the branch tip itself, deciding about it is that check).
    let guard_base = testing_base.or(deployed).filter(|_| chosen.is_some() || leaving);
    let branch_refused = match guard_base {
        Some(base) if base != branch_tip => {
            let history = History {
                deployed: Some(base),
                remote: branch_tip,
                merge_base: fetch::merge_base(repo, base, branch_tip)?,
                applied_before: state.applied_history.contains(&branch_tip.to_string()),
                live_is_remote: true,
            };
            match compare(&history, allowed) {
                Decision::Refuse(refusal) => Some(refusal),
                _ => None,
            }
        }
        _ => None,
    };
    let mut fetched = fetched;
    let testing_name = chosen.map(|tip| {
        fetched.commit = tip;
        fetched.tag = None;
        testing.map(|t| t.name.clone()).unwrap_or_default()
    });
    Ok(Route {
        fetched,
        base: testing_name.as_ref().map(|_| branch_tip),
        testing: testing_name,
        leaving,
        branch_refused,
    })
}

/// The testing tip when it strictly descends from the branch tip; None (deploy the branch) when it is
/// the branch tip or behind it (merged), and when it is off the branch's history (ignored, with a warning).
fn pick(
    repo: &gix::Repository,
    testing: &TestingBranch,
    tip: ObjectId,
    branch_tip: ObjectId,
    deployed: Option<ObjectId>,
    testing_base: Option<ObjectId>,
) -> anyhow::Result<Option<ObjectId>> {
    if tip == branch_tip {
        return Ok(None);
    }
    if deployed == Some(tip) && testing_base == Some(branch_tip) {
        // The poll that finds both where they were: it descended when it was deployed; no history walk.
        return Ok(Some(tip));
    }
    let base = fetch::merge_base(repo, branch_tip, tip)?;
    if base == Some(branch_tip) {
        Ok(Some(tip))
    } else if base == Some(tip) {
        log::debug!("testing branch {} at {} is merged into the branch", testing.name, short_id(tip));
        Ok(None)
    } else {
        log::warn!(
            "ignoring testing branch {} at {}: it does not descend from the branch's tip {} (it was made from an older tip, or the branch moved on); rebase it onto the branch to deploy it here",
            testing.name,
            short_id(tip),
            short_id(branch_tip)
        );
        Ok(None)
    }
}

/// The decision about the route's target, given `decision` (the plain one about it): the branch's own
/// refusal wins; going back from a testing commit to the branch is not a rollback to refuse.
pub fn adjust(route: &Route, decision: Decision) -> Decision {
    if let Some(refusal) = route.branch_refused {
        return Decision::Refuse(refusal);
    }
    match decision {
        Decision::Refuse(_) if route.leaving => Decision::Apply(Why::LeaveTesting),
        other => other,
    }
}

/// After a successful apply of the route's target: record which ref it came from.
pub fn record(state: &mut State, route: &Route, branch: &str) {
    state.deployed_from = Some(route.testing.clone().unwrap_or_else(|| branch.to_string()));
    state.testing_base = route.base.map(|base| base.to_string());
}

/// An up-to-date poll may still change where the live commit counts as coming from (a testing branch
/// merged by fast-forward is now the branch's tip); true when `state` changed and must be saved.
pub fn settle(state: &mut State, route: &Route, branch: &str) -> bool {
    let before = (state.deployed_from.clone(), state.testing_base.clone());
    if before.1.is_none() && route.testing.is_none() {
        return false;
    }
    record(state, route, branch);
    before != (state.deployed_from.clone(), state.testing_base.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(leaving: bool, branch_refused: Option<Refusal>) -> Route {
        let fetched = Fetched {
            commit: ObjectId::null(gix::hash::Kind::Sha1),
            tag: None,
            reference: "refs/heads/main".into(),
            branch: "main".into(),
            testing: None,
        };
        Route { fetched, testing: None, base: None, leaving, branch_refused }
    }

    #[test]
    fn leaving_is_allowed_and_the_branch_guard_wins() {
        let need_push = Decision::Refuse(Refusal::NeedPush);
        let diverged = Decision::Refuse(Refusal::Diverged);
        assert_eq!(adjust(&route(true, None), need_push), Decision::Apply(Why::LeaveTesting));
        assert_eq!(adjust(&route(true, None), diverged), Decision::Apply(Why::LeaveTesting));
        assert_eq!(adjust(&route(false, None), need_push), need_push);
        assert_eq!(adjust(&route(true, Some(Refusal::NeedPush)), Decision::UpToDate), need_push);
        assert_eq!(
            adjust(&route(true, None), Decision::Apply(Why::FastForward)),
            Decision::Apply(Why::FastForward),
            "merged: an ordinary fast-forward"
        );
    }
}
