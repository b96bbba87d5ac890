//! Age identities: the host's SSH host key (ssh-ed25519, ssh-rsa) or native age X25519 keys, read from a file.

use std::io::BufReader;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow, bail};

use crate::secret_file::check_private_file;

/// The host key used when no identity is configured.
pub const DEFAULT_IDENTITY: &str = "/etc/ssh/ssh_host_ed25519_key";

/// Where this host's identity comes from, as configured (the file is read only when a secret is decrypted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdentitySource {
    /// The private key file.
    pub path: PathBuf,
    /// How it was named, for messages: `--age-identity`, `credential age-identity` or the default.
    pub what: &'static str,
}

/// Identities read from files, ready to decrypt with.
pub struct Identities {
    keys: Vec<Box<dyn age::Identity + Send + Sync>>,
}

impl Identities {
    /// The identities to try, in order.
    pub fn as_dyn(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|key| key.as_ref() as &dyn age::Identity)
    }
}

/// Read the identities in `paths` (each checked like a deploy key: ours, not readable by others).
pub fn load(paths: &[(PathBuf, &str)]) -> anyhow::Result<Identities> {
    let mut keys = Vec::new();
    for (path, what) in paths {
        check_private_file(path, what)?;
        keys.extend(read(path, what)?);
    }
    Ok(Identities { keys })
}

/// The identities in one file: an age identity file (`AGE-SECRET-KEY-1…` lines) or an unencrypted OpenSSH key.
fn read(path: &Path, what: &str) -> anyhow::Result<Vec<Box<dyn age::Identity + Send + Sync>>> {
    let shown = path.display();
    let bytes = zeroize::Zeroizing::new(
        std::fs::read(path).with_context(|| format!("{what} {shown}: cannot read it; check the path"))?,
    );
    if let Ok(file) = age::IdentityFile::from_buffer(bytes.as_slice())
        && let Ok(native) = file.into_identities()
        && !native.is_empty()
    {
        return Ok(native.into_iter().map(|key| key as Box<dyn age::Identity + Send + Sync>).collect());
    }
    let ssh = age::ssh::Identity::from_buffer(BufReader::new(bytes.as_slice()), Some(shown.to_string()))
        .map_err(|_| {
            anyhow!(
                "{what} {shown}: not an OpenSSH private key (ssh-ed25519, ssh-rsa) or age identity (AGE-SECRET-KEY-1…); point it at the host's private key"
            )
        })?;
    match ssh {
        age::ssh::Identity::Unencrypted(_) => Ok(vec![Box::new(ssh)]),
        age::ssh::Identity::Encrypted(_) => bail!(
            "{what} {shown}: the key is protected by a passphrase, which an unattended run cannot type; use an unencrypted host key"
        ),
        age::ssh::Identity::Unsupported(_) => bail!(
            "{what} {shown}: this SSH key type cannot decrypt age files; use an ssh-ed25519 or ssh-rsa key, or an age X25519 identity"
        ),
    }
}
