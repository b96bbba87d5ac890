//! The Git remotes of a run: the primary, then each mirror while the ones before cannot be reached; a
//! damaged cache is rebuilt rather than failing every run from then on.

use anyhow::anyhow;
use gix::ObjectId;

use crate::config::Settings;
use crate::deadline;
use crate::fetch::{self, Fetched, Source};
use crate::hostkey;
use crate::layout::Layout;
use crate::outcome::Failure;
use crate::polling::{Remote, mirrors};

/// Fetch from the primary, then from each mirror in order while the ones before could not be reached;
/// returns which remote served the fetch. A remote that answered (even with an error) ends the search.
pub fn fetch_from_remotes(
    settings: &Settings,
    layout: &Layout,
    have: Have,
) -> anyhow::Result<(gix::Repository, Fetched, Remote)> {
    let primary = Remote::primary(&settings.repo_url, &settings.repo_url_display);
    let remotes: Vec<&Remote> = std::iter::once(&primary).chain(&settings.polling.mirrors).collect();
    let mut unreachable: Vec<String> = Vec::new();
    for (index, remote) in remotes.iter().enumerate() {
        match fetch_or_rebuild(settings, layout, Asked { remote, primary: &primary }, have) {
            Ok((repo, fetched)) => {
                if !unreachable.is_empty() {
                    log::warn!("fetched from {} {} ({})", remote.role(), remote.display_url, unreachable.join("; "));
                }
                return Ok((repo, fetched, (*remote).clone()));
            }
            Err(error) if index + 1 < remotes.len() && mirrors::unreachable(&error) => {
                let next = remotes[index + 1];
                log::warn!(
                    "{} {} cannot be reached ({}); trying {} {}",
                    remote.role(),
                    remote.display_url,
                    Failure::from(anyhow!("{error:#}")).message(),
                    next.role(),
                    next.display_url
                );
                unreachable.push(format!("{} {} unreachable", remote.role(), remote.display_url));
            }
            Err(error) if unreachable.is_empty() => return Err(error),
            Err(error) if mirrors::unreachable(&error) => {
                return Err(error.context(format!("no remote could be reached ({})", unreachable.join("; "))));
            }
            Err(error) => return Err(error.context(unreachable.join("; "))),
        }
    }
    unreachable!("the primary is always tried")
}

/// What this host already has, which a fetch need not bring again.
#[derive(Debug, Clone, Copy)]
pub struct Have {
    /// The applied commit.
    pub deployed: Option<ObjectId>,
    /// The branch tip a live testing commit was deployed on.
    pub testing_base: Option<ObjectId>,
}

/// The remote asked this time, and the primary (whose credentials a mirror on another host does not get).
#[derive(Debug, Clone, Copy)]
struct Asked<'a> {
    remote: &'a Remote,
    primary: &'a Remote,
}

/// Fetch; a damaged cache is only a copy of the remote: rebuild it rather than fail every run from now on.
fn fetch_or_rebuild(
    settings: &Settings,
    layout: &Layout,
    asked: Asked<'_>,
    have: Have,
) -> anyhow::Result<(gix::Repository, Fetched)> {
    match fetch_once(settings, layout, asked, have) {
        Err(error) if cache_damaged(&error) => {
            log::warn!(
                "cache repository {} is damaged ({}); rebuilding it from the remote",
                layout.cache().display(),
                Failure::from(error).message()
            );
            std::fs::remove_dir_all(layout.cache())
                .map_err(|e| anyhow!("removing the damaged cache {}: {e}", layout.cache().display()))?;
            fetch_once(settings, layout, asked, have)
        }
        other => other,
    }
}

/// Open the cache and fetch from `remote`, within --fetch-timeout; ssh's messages explain a failure.
fn fetch_once(
    settings: &Settings,
    layout: &Layout,
    asked: Asked<'_>,
    have: Have,
) -> anyhow::Result<(gix::Repository, Fetched)> {
    let (Asked { remote, primary }, Have { deployed, testing_base }) = (asked, have);
    let repo = fetch::open_cache(
        &layout.cache(),
        &settings.ssh_command,
        settings.http_ca_file.as_deref(),
        settings.fetch_timeout,
    )?;
    let ssh_log = layout.ssh_log();
    let _ = std::fs::remove_file(&ssh_log);
    let source = Source {
        url: &remote.url,
        display_url: &remote.display_url,
        reference: settings.source_ref.as_deref(),
        // The token is for the primary's server: a mirror elsewhere gets only what its own URL carries.
        http_credentials: settings.http_credentials.as_ref().filter(|_| remote == primary || remote.same_host(primary)),
        deployed,
        testing: settings.testing.as_ref().map(|t| t.reference.as_str()),
        testing_base,
    };
    let what = format!("fetching from {}", remote.display_url);
    let (fetched, expired) = deadline::run(settings.fetch_timeout, &what, || fetch::fetch(&repo, source));
    let fetched = match fetched {
        Err(_) if expired => Err(anyhow!(
            "{what}: no answer within --fetch-timeout {:?}; nothing changed; check the network and the Git server",
            settings.fetch_timeout
        )),
        other => other.map_err(|e| {
            hostkey::explain(e, &std::fs::read_to_string(&ssh_log).unwrap_or_default(), &settings.host_keys)
        }),
    }?;
    Ok((repo, fetched))
}

/// Whether the local data is corrupt (as opposed to the network or the remote failing).
fn cache_damaged(error: &anyhow::Error) -> bool {
    error.chain().any(|cause| {
        cause.is::<fetch::CacheDamaged>()
            || cause
                .downcast_ref::<gix::Error>()
                .is_some_and(|e| e.dominant_class() == Some(gix::error::Class::Corruption))
    })
}
