//! Fetch one branch of the remote into the bare cache repository and report the remote commit.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::{Context, anyhow, bail};
use gix::ObjectId;
use gix::remote::Direction;

/// The local ref the fetched branch tip is stored under; keeps its objects reachable.
const REMOTE_REF: &str = "refs/gitops/remote";
/// The local ref a testing branch's tip is stored under (`--testing-branch`).
const TESTING_REF: &str = "refs/gitops/testing";

/// The result of a fetch: which commit the remote ref points at.
#[derive(Debug, Clone)]
pub struct Fetched {
    /// The remote ref's tip, peeled to a commit.
    pub commit: ObjectId,
    /// The annotated tag object the ref pointed at, if it was one.
    pub tag: Option<ObjectId>,
    /// The full ref fetched (resolved from the remote's HEAD when none was configured).
    pub reference: String,
    /// Its short name: the branch (or tag) name.
    pub branch: String,
    /// The testing branch's tip, peeled to a commit, when one was asked for and the remote has it.
    pub testing: Option<ObjectId>,
}

/// What to fetch from where.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// URL or path as configured (may hold credentials: only used to connect).
    pub url: &'a str,
    /// The URL as shown in messages.
    pub display_url: &'a str,
    /// Full ref name; None follows the remote's HEAD.
    pub reference: Option<&'a str>,
    /// HTTPS user and token.
    pub http_credentials: Option<&'a (String, String)>,
    /// The deployed commit: when the remote still points there, nothing is read from the cache.
    pub deployed: Option<ObjectId>,
    /// A second full ref fetched over the same connection (`--testing-branch`); it may be missing.
    pub testing: Option<&'a str>,
    /// The branch tip a live testing commit was deployed on: known to be a commit, as `deployed` is.
    pub testing_base: Option<ObjectId>,
}

/// The cache repository turned out to be missing objects it claims to have.
#[derive(Debug)]
pub struct CacheDamaged(pub String);

impl std::fmt::Display for CacheDamaged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CacheDamaged {}

/// Remove lock and temp files a killed run left in the cache; only we use the cache, under our run lock.
fn remove_stale_locks(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => remove_stale_locks(&path),
            Ok(_) if name.ends_with(".lock") || name.starts_with("tmp_") || name.starts_with(".tmp") => {
                log::debug!("removing {}, left by an interrupted run", path.display());
                let _ = std::fs::remove_file(&path);
            }
            _ => {}
        }
    }
}

/// Open the cache repository, creating it on first use and rebuilding it when it is unusable.
pub fn open_cache(
    path: &Path,
    ssh_command: &str,
    http_ca_file: Option<&Path>,
    fetch_timeout: std::time::Duration,
) -> anyhow::Result<gix::Repository> {
    remove_stale_locks(path);
    let mut repo = match open_isolated(path) {
        Ok(repo) => repo,
        Err(open_error) => {
            if path.exists() {
                log::warn!("cache repository {} is unusable ({open_error:#}); rebuilding it", path.display());
                std::fs::remove_dir_all(path)
                    .with_context(|| format!("removing broken cache repository {}", path.display()))?;
            }
            gix::init_bare(path).with_context(|| format!("creating cache repository {}", path.display()))?;
            open_isolated(path)?
        }
    };
    let mut config = repo.config_snapshot_mut();
    // Our ssh command wins over GIT_SSH_COMMAND or any config: host keys stay pinned.
    config.set_value(&gix::config::tree::Core::SSH_COMMAND, ssh_command).context("setting core.sshCommand")?;
    // curl gives up on its own when a transfer stalls, so an http fetch fails cleanly before the deadline.
    let stall = fetch_timeout.as_secs().clamp(1, 60).to_string();
    config.set_value(&gix::config::tree::Http::LOW_SPEED_LIMIT, "1").context("setting http.lowSpeedLimit")?;
    config.set_value(&gix::config::tree::Http::LOW_SPEED_TIME, stall.as_str()).context("setting http.lowSpeedTime")?;
    if let Some(ca) = http_ca_file {
        config
            .set_value(&gix::config::tree::Http::SSL_CA_INFO, ca.to_string_lossy().as_ref())
            .context("setting http.sslCAInfo")?;
    }
    config.commit().context("applying cache repository configuration")?;
    Ok(repo)
}

/// Whether the tip fetched last time can still be read: a cache with refs to missing or truncated
/// objects makes every later fetch fail in negotiation, so it is rebuilt instead.
fn check_sound(repo: &gix::Repository) -> anyhow::Result<()> {
    let Ok(Some(mut reference)) = repo.try_find_reference(REMOTE_REF) else { return Ok(()) };
    let readable = reference.peel_to_id().ok().and_then(|id| repo.find_object(id).ok()).is_some();
    if readable {
        Ok(())
    } else {
        Err(anyhow::Error::new(CacheDamaged(format!("{REMOTE_REF} points at an object that cannot be read"))))
    }
}

fn open_isolated(path: &Path) -> anyhow::Result<gix::Repository> {
    // Isolated: neither ~/.gitconfig nor GIT_* variables may redirect what we fetch or trust.
    let repo = gix::open_opts(path, gix::open::Options::isolated())
        .with_context(|| format!("opening cache repository {}", path.display()))?;
    if !repo.is_bare() {
        bail!("cache repository {} is not bare", path.display());
    }
    Ok(repo)
}

/// Connect, list the remote's refs (one ls-refs) and hand the connection and the mapping of the
/// wanted ref (`from.reference`, else HEAD) to `then`, with that of `from.testing` when the remote has it.
fn with_ref_map<R>(
    repo: &gix::Repository,
    from: Source<'_>,
    then: impl FnOnce(
        gix::remote::fetch::Prepare<'_, '_, Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>>,
        gix::remote::fetch::refmap::Mapping,
        Option<gix::remote::fetch::refmap::Mapping>,
        &str,
    ) -> anyhow::Result<R>,
) -> anyhow::Result<R> {
    let url = from.display_url;
    let source = from.reference.unwrap_or("HEAD").to_string();
    // Both refs in one listing: the testing branch costs no extra round trip.
    let specs: Vec<String> = std::iter::once(format!("+{source}:{REMOTE_REF}"))
        .chain(from.testing.map(|testing| format!("+{testing}:{TESTING_REF}")))
        .collect();
    let remote = repo
        .remote_at(from.url)
        .with_context(|| {
            format!(
                "{url:?} is not a repository URL; use a path, file://, git://, http(s)://, ssh:// or user@host:path"
            )
        })?
        .with_refspecs(specs.iter().map(String::as_str), Direction::Fetch)
        .context("building the fetch refspec")?
        // Tags are not needed to decide or check out, and would make every poll list them all.
        .with_fetch_tags(gix::remote::fetch::Tags::None);
    let credentials = from.http_credentials.cloned();
    let prepare = remote
        .connect(Direction::Fetch)
        .map_err(|e| crate::remote_error::explain(anyhow::Error::new(e), from.url))
        .with_context(|| format!("connecting to {url}"))?
        // Only our configured token answers an authentication request: no helpers, no prompts.
        .with_credentials(move |action| match (action, &credentials) {
            (gix::credentials::helper::Action::Get(context), Some((user, token))) => {
                Ok(Some(gix::credentials::protocol::Outcome {
                    identity: gix::sec::identity::Account {
                        username: user.clone(),
                        password: token.clone(),
                        oauth_refresh_token: None,
                    },
                    next: context.into(),
                }))
            }
            _ => Ok(None),
        })
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|e| crate::remote_error::explain(anyhow::Error::new(e), from.url))
        .with_context(|| format!("listing refs of {url}"))?;
    let mapped = |wanted: &str| {
        prepare.ref_map().mappings.iter().find(|m| m.remote.as_name().is_some_and(|name| name == wanted)).cloned()
    };
    let testing = from.testing.and_then(mapped);
    let mapping = mapped(source.as_str()).ok_or_else(|| match from.reference {
        Some(reference) => match reference.strip_prefix("refs/heads/") {
            Some(branch) => anyhow!("branch {branch:?} does not exist on {url}; push it or fix --branch"),
            None => anyhow!("ref {reference:?} does not exist on {url}; push it or fix --ref"),
        },
        None => anyhow!("{url} has no HEAD (empty repository?); push a commit or pass --branch"),
    })?;
    then(prepare, mapping, testing, &source)
}

/// Fetch the tip of one ref (or the remote's HEAD) without its history: a depth-1 fetch of the commit
/// and its tree, for a throwaway repository that reads what the tip names (the fleet view's hosts).
/// Never on the sync cache: ancestry cannot be decided on a shallow repository.
pub fn fetch_tip(repo: &gix::Repository, from: Source<'_>) -> anyhow::Result<Fetched> {
    with_ref_map(repo, from, |prepare, mapping, testing, source| {
        let prepare = prepare.with_shallow(gix::remote::fetch::Shallow::DepthAtRemote(std::num::NonZeroU32::MIN));
        fetch_mapped(repo, from, prepare, mapping, testing, source)
    })
}

/// `main` for refs/heads/main, `prod` for refs/tags/prod.
fn short_ref(reference: &str) -> String {
    reference
        .strip_prefix("refs/heads/")
        .or_else(|| reference.strip_prefix("refs/tags/"))
        .unwrap_or(reference)
        .to_string()
}

/// Fetch one ref (or the remote's HEAD) into the cache and return its tip.
///
/// Only the one ref is asked for; when its tip is already in the cache no pack is transferred.
pub fn fetch(repo: &gix::Repository, from: Source<'_>) -> anyhow::Result<Fetched> {
    with_ref_map(repo, from, |prepare, mapping, testing, source| {
        fetch_mapped(repo, from, prepare, mapping, testing, source)
    })
}

/// The rest of `fetch`, once the wanted ref is known.
fn fetch_mapped(
    repo: &gix::Repository,
    from: Source<'_>,
    prepare: gix::remote::fetch::Prepare<
        '_,
        '_,
        Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
    >,
    mapping: gix::remote::fetch::refmap::Mapping,
    testing: Option<gix::remote::fetch::refmap::Mapping>,
    source: &str,
) -> anyhow::Result<Fetched> {
    let url = from.display_url;
    let interrupt = AtomicBool::new(false);
    let tip =
        mapping.remote.as_id().ok_or_else(|| anyhow!("{url} did not say which commit {source} points at"))?.to_owned();
    let testing_tip = testing.as_ref().and_then(|m| m.remote.as_id()).map(|id| id.to_owned());
    let up_to_date =
        already_fetched(repo, REMOTE_REF, tip) && testing_tip.is_none_or(|t| already_fetched(repo, TESTING_REF, t));
    let remote_refs = if up_to_date {
        // A no-op poll ends with the ref advertisement: nothing to negotiate, receive or record.
        // Dropping the connection tells the server we are done.
        let refs = prepare.ref_map().remote_refs.clone();
        drop(prepare);
        refs
    } else {
        check_sound(repo)?;
        let outcome = prepare
            .receive(gix::progress::Discard, &interrupt)
            .map_err(anyhow::Error::new)
            .with_context(|| format!("fetching {source} from {url}"))?;
        outcome.ref_map.remote_refs
    };
    let reference = match from.reference {
        Some(reference) => reference.to_string(),
        None => head_target(&remote_refs).unwrap_or_else(|| "HEAD".into()),
    };
    let branch = short_ref(&reference);
    let known = |id: ObjectId| up_to_date && (from.deployed == Some(id) || from.testing_base == Some(id));
    let testing = match (from.testing, testing_tip) {
        (None, _) => None,
        (Some(_), None) => {
            forget_testing(repo);
            None
        }
        (Some(_), Some(id)) if known(id) => Some(id),
        (Some(name), Some(id)) => Some(peel_commit(repo, id, name, url)?),
    };
    if known(tip) {
        // Nothing new and known to be a commit: the object database is not even opened (opening a
        // pack index reads a table as long as the history).
        return Ok(Fetched { commit: tip, tag: None, reference, branch, testing });
    }
    let object = repo.find_object(tip).map_err(|e| {
        anyhow::Error::new(CacheDamaged(format!("fetched tip {tip} of {source} cannot be read from the cache ({e})")))
    })?;
    let tag = (object.kind == gix::object::Kind::Tag).then_some(tip);
    let commit = object
        .peel_to_commit()
        .map_err(|e| anyhow::Error::new(CacheDamaged(format!("{source} on {url}: its commit cannot be read ({e})"))))?
        .id;
    Ok(Fetched { commit, tag, reference, branch, testing })
}

/// The commit `tip` of the testing branch `name` (a branch: a tag there is peeled like any ref).
fn peel_commit(repo: &gix::Repository, tip: ObjectId, name: &str, url: &str) -> anyhow::Result<ObjectId> {
    let object = repo.find_object(tip).map_err(|e| {
        anyhow::Error::new(CacheDamaged(format!("fetched tip {tip} of {name} cannot be read from the cache ({e})")))
    })?;
    Ok(object
        .peel_to_commit()
        .map_err(|e| anyhow::Error::new(CacheDamaged(format!("{name} on {url}: its commit cannot be read ({e})"))))?
        .id)
}

/// Drop our copy of a testing branch the remote no longer has, so its commits are not kept alive.
fn forget_testing(repo: &gix::Repository) {
    if let Ok(Some(reference)) = repo.try_find_reference(TESTING_REF)
        && let Err(e) = reference.delete()
    {
        log::debug!("removing {TESTING_REF} from the cache: {e}");
    }
}

/// Whether our `local` ref already points at `tip`, i.e. an earlier fetch brought it (a damaged cache
/// is found and rebuilt by the first fetch that has something to receive).
fn already_fetched(repo: &gix::Repository, local: &str, tip: ObjectId) -> bool {
    let Ok(Some(reference)) = repo.try_find_reference(local) else { return false };
    reference.target().try_id() == Some(tip.as_ref())
}

/// The ref the remote's HEAD points at, if it told us.
fn head_target(refs: &[gix::protocol::handshake::Ref]) -> Option<String> {
    refs.iter().find_map(|r| match r {
        gix::protocol::handshake::Ref::Symbolic { full_ref_name, target, .. } if full_ref_name == "HEAD" => {
            Some(target.to_string())
        }
        _ => None,
    })
}

/// The merge base of the deployed and remote commits, None when unrelated or the deployed commit is unknown here.
pub fn merge_base(repo: &gix::Repository, deployed: ObjectId, remote: ObjectId) -> anyhow::Result<Option<ObjectId>> {
    if !repo.has_object(deployed) {
        // The deployed commit is not in the remote's history as we know it: treat as diverged, change nothing.
        return Ok(None);
    }
    let base = repo
        .merge_base(deployed, remote)
        .map_err(anyhow::Error::new)
        .with_context(|| format!("computing the merge base of {deployed} and {remote}"))?;
    Ok(base.map(|id| id.detach()))
}

/// Commits reachable from `remote` but not from `deployed`, counting up to a bound (the metrics say
/// how far behind a host is; past the bound the exact number does not matter). None when unknown.
pub fn commits_between(repo: &gix::Repository, deployed: ObjectId, remote: ObjectId) -> Option<u64> {
    const BOUND: usize = 100_000;
    if !repo.has_object(deployed) {
        return None;
    }
    let walk = repo.rev_walk([remote]).with_hidden([deployed]).all().ok()?;
    let mut count = 0u64;
    for info in walk.take(BOUND) {
        info.ok()?;
        count += 1;
    }
    Some(count)
}
