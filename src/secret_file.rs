//! Secret and trust files: systemd credentials, ownership and permission checks as ssh does them, reading.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use crate::redact;

/// A systemd credential file (`LoadCredential=NAME:…`), if the service was given one.
pub fn credential(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let path = Path::new(&dir).join(name);
    path.is_file().then_some(path)
}

/// Refuse a secret file that is missing, owned by another user, or readable by group/others, as ssh does.
pub fn check_private_file(path: &Path, what: &str) -> anyhow::Result<()> {
    check_mode(path, what, 0o077, "are too open (readable by group/others)", "600")
}

/// Refuse a trust file (allowed_signers) that others could change.
pub fn check_not_writable_by_others(path: &Path, what: &str) -> anyhow::Result<()> {
    check_mode(path, what, 0o022, "let group/others change who may sign", "644")
}

/// Refuse `path` when it is owned by someone else or any of the `forbidden` mode bits is set.
fn check_mode(path: &Path, what: &str, forbidden: u32, problem: &str, fix: &str) -> anyhow::Result<()> {
    let meta = owned_file(path, what)?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & forbidden != 0 {
        bail!("{what} {}: permissions {mode:04o} {problem}; run chmod {fix} {}", path.display(), path.display());
    }
    Ok(())
}

/// Read a private secret file (checked like a key), trimmed; an empty one is an error saying what belongs in it.
pub fn read_secret_file(path: &Path, what: &str, content: &str) -> anyhow::Result<String> {
    check_private_file(path, what)?;
    let secret = fs::read_to_string(path).with_context(|| format!("{what} {}: cannot read it", path.display()))?;
    let secret = secret.trim().to_string();
    if secret.is_empty() {
        bail!("{what} {} is empty; put {content} in it", path.display());
    }
    redact::register(&secret);
    Ok(secret)
}

fn owned_file(path: &Path, what: &str) -> anyhow::Result<fs::Metadata> {
    use std::os::unix::fs::MetadataExt;
    let meta =
        fs::metadata(path).with_context(|| format!("{what} {}: cannot read it; check the path", path.display()))?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me && meta.uid() != 0 {
        bail!(
            "{what} {}: owned by uid {}, not by this user ({me}) or root; run chown {me} {}",
            path.display(),
            meta.uid(),
            path.display()
        );
    }
    Ok(meta)
}
