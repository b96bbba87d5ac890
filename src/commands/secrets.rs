//! `gitops secrets`: encrypt, edit, re-key and list the repository's age secrets for the recipients that
//! `.gitops/recipients` gives each path; run in a working clone, never on a host.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, anyhow};
use zeroize::Zeroizing;

use crate::cli::{SecretsAction, SecretsCommand};
use crate::outcome::{Failure, Outcome};
use crate::secrets::decrypt::{self, Opened};
use crate::secrets::identity::{self, Identities};
use crate::secrets::recipients::{self, Key, Recipients, Who};
use crate::secrets::{sealed_in_dir, tmpfs};

/// Run one `gitops secrets` action.
pub fn run(command: SecretsCommand) -> Result<Outcome, Failure> {
    let here = std::env::current_dir().context("reading the current directory")?;
    match command.action {
        SecretsAction::Encrypt { file, armor } => {
            let repo = Repo::find(file.parent().map_or(here.clone(), |p| here.join(p)).as_path())?;
            encrypt(&repo, &here.join(&file), armor)
        }
        SecretsAction::Edit { file, identity, armor } => {
            let repo = Repo::find(file.parent().map_or(here.clone(), |p| here.join(p)).as_path())?;
            edit(&repo, &here.join(&file), &identities(&identity)?, armor)
        }
        SecretsAction::Rekey { identity } => rekey(&Repo::find(&here)?, &identities(&identity)?),
        SecretsAction::List => list(&Repo::find(&here)?),
    }
}

/// The config root (the directory holding `.gitops/recipients`) and its parsed recipients.
struct Repo {
    root: PathBuf,
    recipients: Recipients,
}

impl Repo {
    /// The nearest directory at or above `start` with a `.gitops/recipients`.
    fn find(start: &Path) -> Result<Repo, Failure> {
        let start = fs::canonicalize(start).with_context(|| format!("{}: no such directory", start.display()))?;
        let root = start.ancestors().find(|dir| dir.join(recipients::FILE).is_file()).ok_or_else(|| {
            Failure::usage(anyhow!(
                "no {} in {} or above; create it in the config root with one `PATTERN host…` line per secret (see the README's Secrets section)",
                recipients::FILE,
                start.display()
            ))
        })?;
        let recipients = recipients::load(root).map_err(Failure::usage)?;
        Ok(Repo { root: root.to_path_buf(), recipients })
    }

    /// `file`'s path relative to the config root, with `/` separators.
    fn relative(&self, file: &Path) -> Result<String, Failure> {
        let dir = file.parent().unwrap_or(Path::new("."));
        let dir = fs::canonicalize(dir).with_context(|| format!("{}: no such directory", dir.display()))?;
        let name = file.file_name().ok_or_else(|| Failure::usage(anyhow!("{}: not a file name", file.display())))?;
        let full = dir.join(name);
        let relative = full.strip_prefix(&self.root).map_err(|_| {
            Failure::usage(anyhow!("{} is outside the config root {}", full.display(), self.root.display()))
        })?;
        Ok(relative.to_string_lossy().into_owned())
    }

    /// The keys a secret at `relative` (its `.age` path) is encrypted to: its rules' hosts and keys, then the
    /// admins; an error when no rule matches or a host has no public key in the repository.
    fn keys_for(&self, relative: &str) -> Result<Vec<Key>, Failure> {
        let who = self.recipients.for_path(relative).ok_or_else(|| {
            Failure::usage(anyhow!(
                "no line in {} matches {relative}; add one such as `{relative} HOST…` naming the hosts that may read it",
                self.root.join(recipients::FILE).display()
            ))
        })?;
        let mut keys: Vec<Key> = Vec::new();
        for w in who {
            let key = match w {
                Who::Host(name) => recipients::host_key(&self.root, name).map_err(Failure::usage)?,
                Who::Key(key) => key.clone(),
            };
            keys.push(key);
        }
        keys.extend(self.recipients.admins.iter().cloned());
        let mut unique: Vec<Key> = Vec::new();
        for key in keys {
            if !unique.iter().any(|k| k.text == key.text) {
                unique.push(key);
            }
        }
        Ok(unique)
    }

    /// Every key the repository knows, with its name: the admins, the keys in rules, the hosts' own.
    fn known_keys(&self) -> Vec<Key> {
        let mut known: Vec<Key> = self.recipients.admins.clone();
        for rule in &self.recipients.rules {
            for w in &rule.who {
                match w {
                    Who::Key(key) => known.push(key.clone()),
                    Who::Host(name) => known.extend(recipients::host_key(&self.root, name).ok()),
                }
            }
        }
        if let Ok(hosts) = fs::read_dir(self.root.join(crate::inventory::HOSTS_DIR)) {
            for host in hosts.flatten() {
                known.extend(recipients::host_key(&self.root, &host.file_name().to_string_lossy()).ok());
            }
        }
        known
    }
}

/// The identities given with `-i`, else ~/.ssh/id_ed25519 and ~/.ssh/id_rsa where they exist.
fn identities(given: &[PathBuf]) -> Result<Identities, Failure> {
    let mut paths: Vec<(PathBuf, &str)> = given.iter().map(|p| (p.clone(), "-i")).collect();
    if paths.is_empty()
        && let Some(home) = std::env::var_os("HOME")
    {
        let ssh = Path::new(&home).join(".ssh");
        paths.extend(
            ["id_ed25519", "id_rsa"].map(|f| ssh.join(f)).into_iter().filter(|p| p.is_file()).map(|p| (p, "identity")),
        );
    }
    if paths.is_empty() {
        return Err(Failure::usage(anyhow!(
            "no identity to decrypt with: pass -i FILE (an admin's SSH or age private key listed in {})",
            recipients::FILE
        )));
    }
    identity::load(&paths).map_err(Failure::usage)
}

/// The names of whoever an age file is encrypted to, from its header: SSH keys by their tag, age keys counted.
fn readers(ciphertext: &[u8], known: &[Key]) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    let mut age_keys = 0;
    for (kind, tag) in recipients::stanzas(ciphertext)? {
        if kind.starts_with("ssh-") {
            let name = known.iter().find(|k| recipients::ssh_tag(k).as_deref() == Some(tag.as_str()));
            names.push(name.map_or_else(|| format!("unknown {kind} key (tag {tag})"), |k| k.label.clone()));
        } else if kind == "X25519" {
            age_keys += 1;
        } else {
            names.push(format!("{kind} recipient"));
        }
    }
    if age_keys > 0 {
        names.push(format!("{age_keys} age key{}", if age_keys == 1 { "" } else { "s" }));
    }
    Ok(names)
}

/// What the header would say if the file were encrypted to `keys`.
fn expected_readers(keys: &[Key]) -> Vec<String> {
    let age_keys = keys.iter().filter(|k| k.text.starts_with("age1")).count();
    let mut names: Vec<String> = keys.iter().filter(|k| !k.text.starts_with("age1")).map(|k| k.label.clone()).collect();
    if age_keys > 0 {
        names.push(format!("{age_keys} age key{}", if age_keys == 1 { "" } else { "s" }));
    }
    names
}

fn encrypt(repo: &Repo, file: &Path, armor: bool) -> Result<Outcome, Failure> {
    if file.extension().is_some_and(|e| e == "age") {
        return Err(Failure::usage(anyhow!(
            "{} is already a secret; edit it with gitops secrets edit",
            file.display()
        )));
    }
    let plaintext = Zeroizing::new(fs::read(file).with_context(|| format!("{}: cannot read it", file.display()))?);
    let target = PathBuf::from(format!("{}{}", file.display(), decrypt::SUFFIX));
    let relative = repo.relative(&target)?;
    let keys = repo.keys_for(&relative)?;
    let ciphertext = recipients::seal(&plaintext, &keys, armor)?;
    crate::state::write_atomic_mode(&target, &ciphertext, 0o644)?;
    println!("wrote {relative} for {}", labels(&keys));
    log::warn!("{} is plaintext: delete it (shred -u) or keep it out of Git", file.display());
    Ok(Outcome::Success)
}

fn labels(keys: &[Key]) -> String {
    keys.iter().map(|k| k.label.as_str()).collect::<Vec<_>>().join(", ")
}

fn edit(repo: &Repo, file: &Path, identities: &Identities, armor: bool) -> Result<Outcome, Failure> {
    if decrypt::plain_name(file).is_none() {
        return Err(Failure::usage(anyhow!("{}: a secret's name ends in .age", file.display())));
    }
    let relative = repo.relative(file)?;
    let keys = repo.keys_for(&relative)?;
    let (old, was_armored) = match fs::read(file) {
        Ok(ciphertext) => match decrypt::open(&ciphertext, identities) {
            Opened::Plaintext(plaintext) => (Some(plaintext), recipients::is_armored(&ciphertext)),
            Opened::NotAddressed => {
                return Err(Failure::secrets(anyhow!(
                    "{relative}: none of the given identities can decrypt it; pass -i with an admin's key from {}",
                    recipients::FILE
                )));
            }
            Opened::Broken(why) => return Err(Failure::secrets(anyhow!("{relative}: {why}"))),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (None, false),
        Err(e) => return Err(anyhow::Error::new(e).context(format!("reading {}", file.display())).into()),
    };
    let scratch = Scratch::create(file, old.as_deref().map_or(&[][..], |p| p.as_slice()))?;
    let editor = std::env::var("VISUAL").or_else(|_| std::env::var("EDITOR")).unwrap_or_else(|_| "vi".into());
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("sh")
        .arg(&scratch.path)
        .status()
        .with_context(|| format!("starting the editor {editor:?}"))?;
    if !status.success() {
        return Err(anyhow!("the editor {editor:?} failed ({status}); {relative} is unchanged").into());
    }
    let new = Zeroizing::new(fs::read(&scratch.path).with_context(|| format!("reading {}", scratch.path.display()))?);
    drop(scratch);
    if old.as_deref().is_some_and(|old| *old == *new) {
        println!("{relative} unchanged");
        return Ok(Outcome::Success);
    }
    let ciphertext = recipients::seal(&new, &keys, armor || was_armored)?;
    crate::state::write_atomic_mode(file, &ciphertext, 0o644)?;
    println!("wrote {relative} for {}", labels(&keys));
    Ok(Outcome::Success)
}

/// The private temp file an edit happens in: on tmpfs when there is one, 0600, overwritten and removed on drop.
struct Scratch {
    path: PathBuf,
}

impl Scratch {
    fn create(secret: &Path, content: &[u8]) -> anyhow::Result<Scratch> {
        let shm = Path::new("/dev/shm");
        let dir = if tmpfs::is_on_memory_fs(shm) {
            shm.to_path_buf()
        } else {
            let dir = std::env::temp_dir();
            log::warn!("no tmpfs at /dev/shm: the plaintext is kept in {} while you edit", dir.display());
            dir
        };
        let name = decrypt::plain_name(secret).and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()));
        let path = dir.join(format!("gitops-edit.{}.{}", std::process::id(), name.unwrap_or_default()));
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .with_context(|| format!("creating the temporary file {}", path.display()))?;
        let scratch = Scratch { path };
        file.write_all(content).with_context(|| format!("writing {}", scratch.path.display()))?;
        Ok(scratch)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // Overwrite before unlinking: an editor may have left the inode on disk when /dev/shm is missing.
        if let Ok(mut file) = fs::OpenOptions::new().write(true).custom_flags(libc::O_NOFOLLOW).open(&self.path) {
            let len = file.metadata().map(|m| m.len()).unwrap_or(0);
            let _ = file.write_all(&vec![0u8; usize::try_from(len).unwrap_or(0)]);
            let _ = file.sync_all();
        }
        if let Err(e) = fs::remove_file(&self.path) {
            log::error!("removing the temporary plaintext {}: {e}; remove it by hand", self.path.display());
        }
    }
}

fn rekey(repo: &Repo, identities: &Identities) -> Result<Outcome, Failure> {
    let known = repo.known_keys();
    let mut failed = 0;
    let mut done = 0;
    for secret in sealed_in_dir(&repo.root)? {
        let relative = secret.path.to_string_lossy().into_owned();
        let result = (|| -> Result<String, Failure> {
            let keys = repo.keys_for(&relative)?;
            let plaintext = match decrypt::open(&secret.ciphertext, identities) {
                Opened::Plaintext(plaintext) => plaintext,
                Opened::NotAddressed => {
                    return Err(Failure::secrets(anyhow!(
                        "none of the given identities can decrypt it; pass -i with an admin's key"
                    )));
                }
                Opened::Broken(why) => return Err(Failure::secrets(anyhow!("{why}"))),
            };
            let before = readers(&secret.ciphertext, &known)?;
            let after = expected_readers(&keys);
            let ciphertext = recipients::seal(&plaintext, &keys, recipients::is_armored(&secret.ciphertext))?;
            crate::state::write_atomic_mode(&repo.root.join(&secret.path), &ciphertext, 0o644)?;
            let added: Vec<&String> = after.iter().filter(|a| !before.contains(a)).collect();
            let removed: Vec<&String> = before.iter().filter(|b| !after.contains(b)).collect();
            Ok(if added.is_empty() && removed.is_empty() {
                "re-encrypted, same recipients".to_string()
            } else {
                let mut change: Vec<String> = added.iter().map(|a| format!("+{a}")).collect();
                change.extend(removed.iter().map(|r| format!("-{r}")));
                format!("re-encrypted: {}", change.join(" "))
            })
        })();
        match result {
            Ok(report) => {
                done += 1;
                println!("{relative}: {report}");
            }
            Err(failure) => {
                failed += 1;
                log::error!("{relative}: {}; left as it was", failure.message());
            }
        }
    }
    println!("re-encrypted {done} secret(s){}", if failed > 0 { format!(", {failed} failed") } else { String::new() });
    if failed > 0 {
        return Err(Failure::secrets(anyhow!("{failed} secret(s) could not be re-encrypted; see the lines above")));
    }
    Ok(Outcome::Success)
}

fn list(repo: &Repo) -> Result<Outcome, Failure> {
    let known = repo.known_keys();
    let mut stale = 0;
    for secret in sealed_in_dir(&repo.root)? {
        let relative = secret.path.to_string_lossy().into_owned();
        let actual = match readers(&secret.ciphertext, &known) {
            Ok(readers) => readers,
            Err(e) => {
                println!("{relative}: not a readable age file ({e:#})");
                stale += 1;
                continue;
            }
        };
        let note = match repo.keys_for(&relative) {
            Ok(keys) => {
                let mut expected = expected_readers(&keys);
                let mut sorted = actual.clone();
                expected.sort();
                sorted.sort();
                if expected == sorted {
                    String::new()
                } else {
                    stale += 1;
                    format!(" [{} gives it to: {}; run gitops secrets rekey]", recipients::FILE, expected.join(", "))
                }
            }
            Err(failure) => {
                stale += 1;
                format!(" [{}]", failure.message())
            }
        };
        println!("{relative}: {}{note}", actual.join(", "));
    }
    if stale > 0 {
        // Exit 1, so that CI can check the repository with `gitops secrets list`.
        return Err(anyhow!(
            "{stale} secret(s) are not encrypted as {} says; run gitops secrets rekey",
            recipients::FILE
        )
        .into());
    }
    Ok(Outcome::Success)
}
