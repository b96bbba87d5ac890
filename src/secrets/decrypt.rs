//! Which files are secrets, decrypting one in memory, and what its result means for the run (pure).

use std::io::Read;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use super::identity::Identities;

/// The suffix that makes a file in the config tree a secret.
pub const SUFFIX: &str = ".age";

/// The name a secret gets in the secrets directory: its path without `.age`; None when `path` is not a secret.
pub fn plain_name(path: &Path) -> Option<PathBuf> {
    let name = path.file_name()?.to_str()?;
    let stem = name.strip_suffix(SUFFIX).filter(|stem| !stem.is_empty())?;
    Some(path.with_file_name(stem))
}

/// What trying this host's identities on one secret gave.
pub enum Opened {
    /// It was addressed to this host and authenticated: the plaintext.
    Plaintext(Zeroizing<Vec<u8>>),
    /// None of this host's identities is among its recipients.
    NotAddressed,
    /// Addressed to this host but not decryptable, tampered with, truncated or not an age file: why.
    Broken(String),
}

/// Read the header of `ciphertext` (binary or ASCII-armored age) as every host does first; Err says why
/// no host can decrypt it: not an age file, or encrypted with a passphrase. Nothing is decrypted here.
pub fn header(ciphertext: &[u8]) -> Result<age::Decryptor<impl std::io::BufRead + '_>, String> {
    let reader = age::armor::ArmoredReader::new(ciphertext);
    let decryptor = age::Decryptor::new_buffered(reader).map_err(|e| format!("not a valid age file ({e})"))?;
    if decryptor.is_scrypt() {
        return Err("encrypted with a passphrase, which a host cannot type; encrypt it to recipients".into());
    }
    Ok(decryptor)
}

/// Decrypt `ciphertext` (binary or ASCII-armored age) with `identities`, entirely in memory.
pub fn open(ciphertext: &[u8], identities: &Identities) -> Opened {
    let decryptor = match header(ciphertext) {
        Ok(decryptor) => decryptor,
        Err(why) => return Opened::Broken(why),
    };
    let mut stream = match decryptor.decrypt(identities.as_dyn()) {
        Ok(stream) => stream,
        Err(age::DecryptError::NoMatchingKeys) => return Opened::NotAddressed,
        Err(e) => return Opened::Broken(describe(&e)),
    };
    let mut plaintext = Zeroizing::new(Vec::new());
    match stream.read_to_end(&mut plaintext) {
        Ok(_) => Opened::Plaintext(plaintext),
        // The payload is authenticated chunk by chunk: a changed or cut-off file fails here.
        Err(e) => Opened::Broken(format!("authentication failed, the file was tampered with or truncated ({e})")),
    }
}

fn describe(error: &age::DecryptError) -> String {
    match error {
        age::DecryptError::InvalidMac | age::DecryptError::DecryptionFailed => {
            "authentication failed, the file was tampered with or encrypted for another key with the same tag".into()
        }
        other => format!("cannot decrypt it ({other})"),
    }
}

/// What the run does with one secret.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Write it to the secrets directory.
    Use,
    /// Not for this host (hosts share one repository): leave it.
    Skip,
    /// Stop the run before anything is published or applied, for this reason.
    Stop(String),
}

/// Decide about a secret: one this host cannot decrypt is skipped (hosts share one repository), unless it
/// is this host's (`mine` says why: its own directory, or the recipients file grants it to the host); a
/// broken one always stops the run.
pub fn judge(opened: &Opened, mine: Option<String>) -> Verdict {
    match (opened, mine) {
        (Opened::Plaintext(_), _) => Verdict::Use,
        (Opened::Broken(why), _) => Verdict::Stop(why.clone()),
        (Opened::NotAddressed, Some(why)) => Verdict::Stop(format!(
            "{why}, but it is not encrypted to this host's key; re-encrypt it (gitops secrets rekey) with this host's public key among its recipients"
        )),
        (Opened::NotAddressed, None) => Verdict::Skip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_named_without_their_suffix() {
        assert_eq!(plain_name(Path::new("hosts/web1/db.pass.age")), Some(PathBuf::from("hosts/web1/db.pass")));
        assert_eq!(plain_name(Path::new("tls.key.age")), Some(PathBuf::from("tls.key")));
        assert_eq!(plain_name(Path::new(".age")), None, "a file called .age names nothing");
        assert_eq!(plain_name(Path::new("notes.txt")), None);
        assert_eq!(plain_name(Path::new("age")), None);
    }

    #[test]
    fn only_the_hosts_own_secrets_must_decrypt() {
        let mine = || Some("it is in this host's own directory".to_string());
        assert_eq!(judge(&Opened::NotAddressed, None), Verdict::Skip);
        let Verdict::Stop(why) = judge(&Opened::NotAddressed, mine()) else { panic!("must stop") };
        assert!(why.starts_with("it is in this host's own directory, but it is not encrypted to this host's key"));
        assert!(matches!(judge(&Opened::Broken("tampered".into()), None), Verdict::Stop(_)));
        assert_eq!(judge(&Opened::Plaintext(Zeroizing::new(b"x".to_vec())), None), Verdict::Use);
    }
}
