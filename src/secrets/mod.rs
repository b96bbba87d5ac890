//! Secrets in Git: `*.age` files in the config tree, decrypted in memory with this host's key and written
//! only to a private tmpfs directory for as long as an entrypoint (or teardown) runs.

pub mod decrypt;
pub mod identity;
pub mod recipients;
pub mod tmpfs;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, anyhow};
use gix::ObjectId;
use zeroize::Zeroizing;

use crate::outcome::Failure;
use crate::printable::printable;
use crate::redact;
use decrypt::{Opened, Verdict};
use identity::IdentitySource;
use tmpfs::{Base, Mounted};

/// How this host decrypts secrets: its identity and where the per-run directories go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretsSettings {
    /// The identity file; when it is the default and does not exist, this host has no identity.
    pub identity: IdentitySource,
    /// Whether the identity was configured (flag, env, credential) rather than the default.
    pub identity_explicit: bool,
    /// Where per-run secrets directories are made.
    pub base: Base,
}

/// A secret as stored in a commit: its path relative to the config root and its ciphertext.
pub struct Sealed {
    /// Path relative to the config root, ending in `.age`.
    pub path: PathBuf,
    /// The age file (binary or armored).
    pub ciphertext: Vec<u8>,
}

/// The secrets of one commit as this host sees them, decrypted in memory.
#[derive(Default)]
pub struct Unsealed {
    /// (name in the secrets directory, plaintext) of each secret addressed to this host.
    pub files: Vec<(PathBuf, Zeroizing<Vec<u8>>)>,
    /// Secrets addressed to other hosts, by their `.age` path.
    pub skipped: Vec<PathBuf>,
}

/// Every `*.age` blob below the config root `root` of `commit`, read from the repository (never a symlink).
pub fn sealed_in_commit(repo: &gix::Repository, commit: ObjectId, root: &Path) -> anyhow::Result<Vec<Sealed>> {
    let reading = || format!("reading the secrets of commit {commit}");
    let mut tree = repo.find_commit(commit).and_then(|c| c.tree()).map_err(anyhow::Error::new).with_context(reading)?;
    if !root.as_os_str().is_empty() {
        match tree.lookup_entry_by_path(root).map_err(anyhow::Error::new).with_context(reading)? {
            Some(entry) if entry.mode().is_tree() => {
                tree = repo.find_tree(entry.object_id()).map_err(anyhow::Error::new).with_context(reading)?;
            }
            _ => return Ok(Vec::new()),
        }
    }
    let mut found = Vec::new();
    let mut stack = vec![(tree.id, PathBuf::new())];
    while let Some((id, prefix)) = stack.pop() {
        let tree = repo.find_tree(id).map_err(anyhow::Error::new).with_context(reading)?;
        let decoded = tree.decode().map_err(anyhow::Error::new).with_context(reading)?;
        for entry in &decoded.entries {
            let Ok(name) = std::str::from_utf8(entry.filename.as_ref()) else { continue };
            let path = prefix.join(name);
            if entry.mode.is_tree() {
                stack.push((entry.oid.to_owned(), path));
            } else if entry.mode.is_blob() && decrypt::plain_name(&path).is_some() {
                let blob = repo.find_blob(entry.oid).map_err(anyhow::Error::new).with_context(reading)?;
                found.push(Sealed { path, ciphertext: blob.data.clone() });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// `.gitops/recipients` below the config root `root` of `commit`, when the commit has one.
pub fn recipients_in_commit(repo: &gix::Repository, commit: ObjectId, root: &Path) -> anyhow::Result<Option<String>> {
    let reading = || format!("reading {} of commit {commit}", recipients::FILE);
    let tree = repo.find_commit(commit).and_then(|c| c.tree()).map_err(anyhow::Error::new).with_context(reading)?;
    let Some(entry) =
        tree.lookup_entry_by_path(root.join(recipients::FILE)).map_err(anyhow::Error::new).with_context(reading)?
    else {
        return Ok(None);
    };
    if !entry.mode().is_blob() {
        return Ok(None);
    }
    let blob = repo.find_blob(entry.object_id()).map_err(anyhow::Error::new).with_context(reading)?;
    Ok(Some(String::from_utf8_lossy(&blob.data).into_owned()))
}

/// Which secrets must open on this host: those in its own directories (`hosts/<name>/`), and those
/// `.gitops/recipients` grants to one of its names. Any other secret it cannot open is another host's.
pub struct Mine<'a> {
    /// The host's own directories, relative to the config root.
    dirs: &'a [PathBuf],
    /// The repository's recipients file, parsed.
    recipients: Option<recipients::Recipients>,
}

impl<'a> Mine<'a> {
    /// The host with directories `dirs`, in a repository whose recipients file says `recipients_text`.
    /// A recipients file that does not parse stops the run: which secrets are this host's is unknown.
    pub fn new(dirs: &'a [PathBuf], recipients_text: Option<&str>) -> Result<Mine<'a>, Failure> {
        let recipients = recipients_text.map(recipients::parse).transpose().map_err(|e| {
            Failure::secrets(anyhow!("{}: {e}; fix it in a new commit; nothing was applied", recipients::FILE))
        })?;
        Ok(Mine { dirs, recipients })
    }

    /// Why the secret at `path` (relative to the config root) must open on this host; None when it need not.
    pub fn why(&self, path: &Path) -> Option<String> {
        if self.dirs.iter().any(|dir| path.starts_with(dir)) {
            return Some("it is in this host's own directory".into());
        }
        let names: Vec<&str> = self.dirs.iter().filter_map(|dir| dir.file_name()?.to_str()).collect();
        let granted = self.recipients.as_ref()?.for_path(path.to_str()?)?;
        granted.into_iter().find_map(|who| match who {
            recipients::Who::Host(host) if names.contains(&host.as_str()) => {
                Some(format!("{} grants it to {host}", recipients::FILE))
            }
            _ => None,
        })
    }
}

/// Every `*.age` regular file below `dir` (a checkout on disk, or a working clone; `.git` is not searched).
pub fn sealed_in_dir(dir: &Path) -> anyhow::Result<Vec<Sealed>> {
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(relative) = stack.pop() {
        let listing = std::fs::read_dir(dir.join(&relative))
            .with_context(|| format!("listing {}", dir.join(&relative).display()))?;
        for entry in listing {
            let entry = entry?;
            let path = relative.join(entry.file_name());
            let kind = entry.file_type()?;
            if kind.is_dir() && entry.file_name() != ".git" {
                stack.push(path);
            } else if kind.is_file() && decrypt::plain_name(&path).is_some() {
                let ciphertext =
                    std::fs::read(dir.join(&path)).with_context(|| format!("reading {}", dir.join(&path).display()))?;
                found.push(Sealed { path, ciphertext });
            }
        }
    }
    found.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(found)
}

/// Decrypt the secrets addressed to this host, in memory, and register their values with the redactor.
/// A secret that is this host's (`mine`) and that it cannot decrypt, or any that fails authentication, is
/// an error (exit 32) naming the file and the reason; nothing has been written or run at that point.
pub fn unseal(settings: &SecretsSettings, sealed: Vec<Sealed>, mine: &Mine<'_>) -> Result<Unsealed, Failure> {
    let mut unsealed = Unsealed::default();
    if sealed.is_empty() {
        return Ok(unsealed);
    }
    let started = Instant::now();
    let source = &settings.identity;
    let identities = if settings.identity_explicit || source.path.exists() {
        Some(identity::load(&[(source.path.clone(), source.what)]).map_err(|e| {
            Failure::secrets(e.context("reading this host's age identity to decrypt the commit's secrets"))
        })?)
    } else {
        None
    };
    for secret in sealed {
        let shown = printable(&secret.path.display().to_string()).into_owned();
        let opened = match &identities {
            Some(identities) => decrypt::open(&secret.ciphertext, identities),
            None => Opened::NotAddressed,
        };
        match decrypt::judge(&opened, mine.why(&secret.path)) {
            Verdict::Use => {
                if let (Opened::Plaintext(plaintext), Some(name)) = (opened, decrypt::plain_name(&secret.path)) {
                    register(&shown, &plaintext);
                    unsealed.files.push((name, plaintext));
                }
            }
            Verdict::Skip => unsealed.skipped.push(secret.path),
            Verdict::Stop(_) if identities.is_none() => {
                return Err(Failure::secrets(anyhow!(
                    "secret {shown} is for this host, which has no age identity ({} does not exist); pass --age-identity FILE (or the credential age-identity); nothing was applied",
                    source.path.display()
                )));
            }
            Verdict::Stop(why) => {
                // Which key was tried: the default (the host's ssh key) is easy to use without knowing it.
                return Err(Failure::secrets(anyhow!(
                    "secret {shown}: {why} (tried {} {}); nothing was applied",
                    source.what,
                    source.path.display()
                )));
            }
        }
    }
    log::debug!(
        "decrypted {} secrets ({} for other hosts) in {:.2?}",
        unsealed.files.len(),
        unsealed.skipped.len(),
        started.elapsed()
    );
    Ok(unsealed)
}

/// Register a decrypted value with the redactor: the whole value and each of its lines.
fn register(shown: &str, plaintext: &[u8]) {
    let text = Zeroizing::new(String::from_utf8_lossy(plaintext).into_owned());
    let mut too_short = false;
    for piece in std::iter::once(text.as_str()).chain(text.lines()) {
        let piece = piece.trim();
        if piece.is_empty() {
            continue;
        }
        if piece.len() < redact::MIN_SECRET_LEN {
            too_short = true;
        } else {
            redact::register(piece);
        }
    }
    if too_short {
        log::warn!(
            "secret {shown} has a value (or a line) shorter than {} bytes, which is not hidden in logs and notifications (hiding it would garble ordinary text)",
            redact::MIN_SECRET_LEN
        );
    }
}

/// Write `unsealed` into a fresh private directory in `base` for one run; None when there is nothing to write.
pub fn mount(unsealed: &Unsealed, base: &Base, record: &Path) -> Result<Option<Mounted>, Failure> {
    if unsealed.files.is_empty() {
        return Ok(None);
    }
    let mounted = Mounted::create(base, record).map_err(Failure::secrets)?;
    for (name, plaintext) in &unsealed.files {
        mounted.write(name, plaintext).map_err(Failure::secrets)?;
    }
    Ok(Some(mounted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_host_must_open_its_own_directory_and_what_recipients_grant_its_names() {
        let dirs = [PathBuf::from("hosts/web1.example.com"), PathBuf::from("hosts/web1")];
        let text = "shared/*.age web1 db1\ndb/** db1\n";
        let mine = Mine::new(&dirs, Some(text)).unwrap();
        assert_eq!(mine.why(Path::new("hosts/web1/pass.age")).as_deref(), Some("it is in this host's own directory"));
        assert_eq!(mine.why(Path::new("shared/token.age")).as_deref(), Some(".gitops/recipients grants it to web1"));
        assert_eq!(mine.why(Path::new("db/pass.age")), None);
        // `hosts/web10` is another host, not a subdirectory of web1's.
        assert_eq!(mine.why(Path::new("hosts/web10/p.age")), None);
        assert_eq!(Mine::new(&dirs, None).unwrap().why(Path::new("shared/token.age")), None);
        let broken = Mine::new(&dirs, Some("shared/*.age\n")).err().unwrap();
        assert_eq!(broken.outcome, crate::outcome::Outcome::SecretsFailed);
    }
}
