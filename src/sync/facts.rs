//! The facts a run decides on, gathered at the edge: the state directory, the change probe, the Git
//! remotes, the signature check and the rollout policy. Each answer is worked out only when
//! [`decide`](crate::decide::decide) asks for it; what it found is kept for acting and reporting.

use gix::ObjectId;

use super::remotes::{self, Have};
use crate::checkout;
use crate::clock::now_unix;
use crate::commit_id;
use crate::config::Settings;
use crate::decide::{self, Allowed, Decision, Facts, History, Target, Why};
use crate::fetch;
use crate::layout::Layout;
use crate::outcome::Failure;
use crate::polling::{self, Before, Remote};
use crate::reconcile::{self, Due};
use crate::rollout::{self, Hold};
use crate::state::{self, SignatureVerdict, State};
use crate::suspend::{self, Suspension};
use crate::testing::{self, Route};
use crate::verify;

/// What a fetch brought: the cache repository, the commit decided about and what it is to this host.
pub struct Fetch {
    /// The cache repository.
    pub repo: gix::Repository,
    /// The target and the ref it came from.
    pub route: Route,
    /// What the target is to this host.
    pub decision: Decision,
}

/// The facts of one run, as far as they were asked for.
pub struct Gather<'a> {
    /// The run's settings.
    pub settings: &'a Settings,
    /// The state directory.
    pub layout: &'a Layout,
    /// state.json as loaded (and updated by the facts that record something).
    pub state: State,
    /// The applied commit.
    pub deployed: Option<ObjectId>,
    /// The suspension in force, when the host is suspended.
    pub suspension: Option<Suspension>,
    /// What the change probe said, once asked.
    pub before: Option<Before>,
    /// The remote that served the fetch, as soon as it did (also when deciding about it then failed).
    pub served_by: Option<Remote>,
    /// What the fetch brought, once fetched and compared.
    pub fetch: Option<Fetch>,
}

impl<'a> Gather<'a> {
    /// Start with state.json (a corrupt one is moved aside: the host starts afresh).
    pub fn new(settings: &'a Settings, layout: &'a Layout) -> Result<Gather<'a>, Failure> {
        let state = state::load_or_quarantine(&layout.state_file())?;
        let deployed =
            state.applied_commit.as_deref().map(|hex| commit_id::parse(hex, "applied_commit")).transpose()?;
        Ok(Gather { settings, layout, state, deployed, suspension: None, before: None, served_by: None, fetch: None })
    }

    /// The fetch, once [`Facts::target`] has answered.
    pub fn fetched(&self) -> Result<&Fetch, Failure> {
        self.fetch.as_ref().ok_or_else(|| Failure::from(anyhow::anyhow!("internal: acting on a target never fetched")))
    }

    /// Save state.json, unless this is a dry run.
    pub fn save(&self) -> Result<(), Failure> {
        if !self.settings.dry_run {
            state::save(&self.layout.state_file(), &self.state)?;
        }
        Ok(())
    }

    fn source(&self) -> String {
        polling::source_of(&self.settings.repo_url_display, self.settings.source_ref.as_deref())
    }
}

impl Facts for Gather<'_> {
    fn suspended(&mut self) -> Result<bool, Failure> {
        self.suspension = suspend::active(self.layout, now_unix(), !self.settings.dry_run)?;
        Ok(self.suspension.is_some())
    }

    fn probe_unchanged(&mut self) -> bool {
        let source = self.source();
        let settings = self.settings;
        let context = polling::RunContext {
            source: &source,
            retry: settings.retry,
            ca_file: settings.http_ca_file.as_deref(),
            fetch_timeout: settings.fetch_timeout,
        };
        let before = polling::before_fetch(&settings.polling, context, self.layout, &self.state);
        let unchanged = matches!(before, Before::Unchanged { .. });
        self.before = Some(before);
        unchanged
    }

    fn reconcile(&mut self) -> Due {
        let settings = self.settings;
        match (settings.reapply_every, self.deployed) {
            (Some(every), Some(live)) => reconcile::due(
                &self.state,
                live,
                every.as_secs() as i64,
                settings.max_attempts,
                settings.retry,
                now_unix(),
            ),
            _ => Due::NotYet,
        }
    }

    fn target(&mut self) -> Result<Target, Failure> {
        let settings = self.settings;
        let testing_base =
            self.state.testing_base.as_deref().map(|hex| commit_id::parse(hex, "testing_base")).transpose()?;
        let have = Have { deployed: self.deployed, testing_base };
        let (repo, fetched, served_by) = remotes::fetch_from_remotes(settings, self.layout, have)?;
        crate::failpoint::hit("fetched");
        self.served_by = Some(served_by);
        let validators = match &self.before {
            Some(Before::Fetch { validators, .. }) => validators.clone(),
            _ => None,
        };
        let source = self.source();
        let branch = fetched.branch.clone();
        let served_by = self.served_by.as_ref().ok_or_else(|| anyhow::anyhow!("internal: no remote served"))?;
        if polling::after_fetch(&settings.polling, &mut self.state, &source, served_by, &branch, validators) {
            self.save()?;
        }
        let allowed = Allowed { rewind: settings.allow_rewind, diverged: settings.allow_diverged };
        let route = testing::route(&repo, settings.testing.as_ref(), fetched, self.deployed, &self.state, allowed)?;
        let remote = route.fetched.commit;
        let history = History {
            deployed: self.deployed,
            remote,
            merge_base: match self.deployed {
                Some(deployed) if deployed != remote => fetch::merge_base(&repo, deployed, remote)?,
                _ => None,
            },
            applied_before: self.state.applied_history.contains(&remote.to_string()),
            live_is_remote: checkout::live_commit(self.layout)
                .is_some_and(|live| ObjectId::from_hex(live.as_bytes()).is_ok_and(|live| live == remote)),
        };
        let decision = testing::adjust(&route, decide::ancestry::compare(&history, allowed));
        let testing = route.testing.is_some();
        self.fetch = Some(Fetch { repo, route, decision });
        Ok(Target { commit: remote, decision, testing })
    }

    fn verified(&mut self) -> Result<bool, Failure> {
        let Some(trust) = &self.settings.trust else { return Ok(true) };
        let fetch = self.fetch.as_ref().ok_or_else(|| anyhow::anyhow!("internal: verifying before fetching"))?;
        let record = verify::check(&fetch.repo, trust, &fetch.route.fetched, self.deployed)?;
        let rejected = record.verdict == SignatureVerdict::Rejected;
        if !self.settings.dry_run {
            self.state.verification = Some(record);
            if rejected {
                self.save()?;
            }
        }
        Ok(!rejected)
    }

    fn hold(&mut self, why: Why) -> Result<Option<Hold>, Failure> {
        let settings = self.settings;
        let inventory = &settings.fleet.inventory;
        let host = rollout::consider::Host {
            name: &settings.hostname,
            tags: &inventory.tags,
            root: &inventory.root,
            gate: settings.fleet.gate.as_ref(),
        };
        let fetch = self.fetch.as_ref().ok_or_else(|| anyhow::anyhow!("internal: a policy before the fetch"))?;
        let before = self.state.rollout.clone();
        let commit = fetch.route.fetched.commit;
        let hold = rollout::consider::consider(&fetch.repo, commit, &host, why == Why::FirstDeploy, &mut self.state)?;
        // A commit that goes now saves its record with the attempt; one held back saves it now (first seen,
        // gate opened), and only when it changed.
        if hold.is_some() && self.state.rollout != before {
            self.save()?;
        }
        Ok(hold)
    }

    fn rollback(&mut self) -> Result<Option<decide::Rollback>, Failure> {
        let Some(record) = &self.state.rollback else { return Ok(None) };
        Ok(Some(decide::Rollback {
            from: commit_id::parse(&record.from, "rollback.from")?,
            to: commit_id::parse(&record.to, "rollback.to")?,
            done: record.succeeded && record.finished_at.is_some(),
            attempts: record.attempts,
        }))
    }

    fn last_failure(&mut self) -> Result<Option<(ObjectId, u32)>, Failure> {
        // After a rollback the last attempt is the commit gone back to: the failure is the one rolled back from.
        let state = &self.state;
        let went_back = state.last_attempt.as_ref().map(|a| a.commit.as_str());
        if let Some(rollback) = state.rollback.as_ref().filter(|r| went_back == Some(r.to.as_str())) {
            return Ok(Some((commit_id::parse(&rollback.from, "rollback.from")?, rollback.failed_attempt)));
        }
        match self.state.last_failure() {
            Some((hex, n)) => Ok(Some((commit_id::parse(hex, "last_attempt.commit")?, n))),
            None => Ok(None),
        }
    }
}
