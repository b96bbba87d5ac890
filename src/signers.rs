//! OpenSSH `allowed_signers` files: who may sign, for which namespaces, and when.
//!
//! Format (ssh-keygen(1), ALLOWED SIGNERS): `principals [options] keytype base64 [comment]`,
//! options `namespaces="a,b"`, `valid-after=TIME`, `valid-before=TIME`, `cert-authority`.

use std::fs;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use ssh_key::PublicKey;
use time::{Date, Month, OffsetDateTime, PrimitiveDateTime, Time};

/// One line of an allowed_signers file.
#[derive(Debug, Clone)]
pub struct Signer {
    /// Comma-separated principals as written (informational: git matches by key).
    pub principals: String,
    /// Namespaces this key may sign for; None means any.
    pub namespaces: Option<Vec<String>>,
    /// Signatures made before this instant are not accepted.
    pub valid_after: Option<OffsetDateTime>,
    /// Signatures made after this instant are not accepted.
    pub valid_before: Option<OffsetDateTime>,
    /// The signer's public key.
    pub key: PublicKey,
}

impl Signer {
    /// Whether this entry allows signing for `namespace`.
    pub fn allows_namespace(&self, namespace: &str) -> bool {
        self.namespaces.as_ref().is_none_or(|list| list.iter().any(|n| n == namespace))
    }
}

/// All signers of one file.
#[derive(Debug, Clone, Default)]
pub struct AllowedSigners {
    /// Entries in file order.
    pub signers: Vec<Signer>,
}

impl AllowedSigners {
    /// Read and parse a file; errors name the file and line.
    pub fn load(path: &Path) -> anyhow::Result<AllowedSigners> {
        let text = fs::read_to_string(path).with_context(|| {
            format!("allowed signers file {}: cannot read it; check --allowed-signers", path.display())
        })?;
        let signers = parse(&text).map_err(|e| anyhow!("allowed signers file {}: {e}", path.display()))?;
        if signers.signers.is_empty() {
            bail!("allowed signers file {} lists no keys; add `principal ssh-ed25519 AAAA…` lines", path.display());
        }
        Ok(signers)
    }

    /// Entries whose key is `key`.
    pub fn entries_for<'a>(&'a self, key: &'a ssh_key::public::KeyData) -> impl Iterator<Item = &'a Signer> + 'a {
        self.signers.iter().filter(move |s| s.key.key_data() == key)
    }
}

/// Parse allowed_signers text.
pub fn parse(text: &str) -> Result<AllowedSigners, String> {
    let mut signers = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let signer = parse_line(line).map_err(|e| format!("line {}: {e}", index + 1))?;
        signers.push(signer);
    }
    Ok(AllowedSigners { signers })
}

fn parse_line(line: &str) -> Result<Signer, String> {
    let (principals, rest) = next_token(line).ok_or("missing principals")?;
    let (second, rest_after_second) = next_token(rest).ok_or("missing key type")?;
    let (options, key_line) = if is_key_type(&second) { (None, rest) } else { (Some(second), rest_after_second) };
    let mut parts = key_line.split_whitespace();
    let (Some(kind), Some(blob)) = (parts.next(), parts.next()) else {
        return Err("expected `keytype base64-key` after the principals and options".into());
    };
    let key = PublicKey::from_openssh(&format!("{kind} {blob}"))
        .map_err(|e| format!("key {kind} could not be read ({e}); copy the line from the .pub file"))?;
    let mut signer =
        Signer { principals: principals.to_string(), namespaces: None, valid_after: None, valid_before: None, key };
    if let Some(options) = options {
        for option in split_options(&options) {
            let (name, value) = match option.split_once('=') {
                Some((name, value)) => (name.to_ascii_lowercase(), Some(value.trim_matches('"').to_string())),
                None => (option.to_ascii_lowercase(), None),
            };
            match (name.as_str(), value) {
                ("namespaces", Some(value)) => {
                    signer.namespaces = Some(value.split(',').map(|n| n.trim().to_string()).collect())
                }
                ("valid-after", Some(value)) => signer.valid_after = Some(parse_time(&value)?),
                ("valid-before", Some(value)) => signer.valid_before = Some(parse_time(&value)?),
                ("cert-authority", None) => {
                    return Err("cert-authority entries are not supported; list the signing keys themselves".into());
                }
                (other, _) => return Err(format!("unknown or malformed option {other:?}")),
            }
        }
    }
    Ok(signer)
}

fn is_key_type(token: &str) -> bool {
    token.starts_with("ssh-") || token.starts_with("ecdsa-sha2-") || token.starts_with("sk-")
}

/// The next whitespace-separated token, where double quotes may hold spaces and commas.
fn next_token(s: &str) -> Option<(String, &str)> {
    let s = s.trim_start();
    if s.is_empty() {
        return None;
    }
    let mut in_quotes = false;
    for (i, c) in s.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            c if c.is_whitespace() && !in_quotes => return Some((s[..i].to_string(), &s[i..])),
            _ => {}
        }
    }
    Some((s.to_string(), ""))
}

/// Split `a,b="x,y",c` at commas outside quotes.
fn split_options(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut in_quotes = false;
    for c in s.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                current.push(c);
            }
            ',' if !in_quotes => out.push(std::mem::take(&mut current)),
            _ => current.push(c),
        }
    }
    out.push(current);
    out.into_iter().filter(|o| !o.is_empty()).collect()
}

/// `YYYYMMDD[HHMM[SS]][Z]`; read as UTC whether or not the `Z` is there.
pub fn parse_time(text: &str) -> Result<OffsetDateTime, String> {
    let digits = text.strip_suffix(['Z', 'z']).unwrap_or(text);
    let bad = || format!("time {text:?} is not YYYYMMDD[HHMM[SS]][Z]");
    if !digits.chars().all(|c| c.is_ascii_digit()) || ![8, 12, 14].contains(&digits.len()) {
        return Err(bad());
    }
    let num = |range: std::ops::Range<usize>| digits.get(range).unwrap_or("0").parse::<u32>().map_err(|_| bad());
    let year = num(0..4)? as i32;
    let month = Month::try_from(num(4..6)? as u8).map_err(|_| bad())?;
    let date = Date::from_calendar_date(year, month, num(6..8)? as u8).map_err(|_| bad())?;
    let (hour, minute, second) = if digits.len() >= 12 {
        (num(8..10)?, num(10..12)?, if digits.len() == 14 { num(12..14)? } else { 0 })
    } else {
        (0, 0, 0)
    };
    let time = Time::from_hms(hour as u8, minute as u8, second as u8).map_err(|_| bad())?;
    Ok(PrimitiveDateTime::new(date, time).assume_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDPeCE88cyJMK36tKgF0SeRgdLBDF/9bFNid+5ZFC1QZ";

    #[test]
    fn parses_principals_options_and_comments() {
        let text = format!(
            "# fleet signers\n\nalice@example.com {KEY} alice laptop\n\"bob@x,carol@y\" namespaces=\"git,file\",valid-after=\"20260101\",valid-before=\"20270101Z\" {KEY}\n"
        );
        let signers = parse(&text).unwrap().signers;
        assert_eq!(signers.len(), 2);
        assert_eq!(signers[0].principals, "alice@example.com");
        assert!(signers[0].allows_namespace("git"));
        assert_eq!(signers[1].namespaces.as_deref(), Some(&["git".to_string(), "file".to_string()][..]));
        assert_eq!(signers[1].valid_after.unwrap().year(), 2026);
        assert_eq!(signers[1].valid_before.unwrap().year(), 2027);
        assert!(signers[0].key.fingerprint(ssh_key::HashAlg::Sha256).to_string().starts_with("SHA256:"));
    }

    #[test]
    fn rejects_what_it_cannot_honour_with_the_line_number() {
        for (text, needle) in [
            (format!("a cert-authority {KEY}"), "cert-authority"),
            (format!("a frobnicate=1 {KEY}"), "frobnicate"),
            ("a ssh-ed25519 !!!notbase64".to_string(), "could not be read"),
            ("just-a-principal".to_string(), "missing key type"),
            (format!("a valid-before=\"2026\" {KEY}"), "YYYYMMDD"),
            (format!("# ok\na valid-after=\"20261341\" {KEY}"), "line 2"),
        ] {
            let err = parse(&text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn times() {
        assert_eq!(parse_time("20261128").unwrap().to_string(), "2026-11-28 0:00:00.0 +00:00:00");
        assert_eq!(parse_time("202611281230Z").unwrap().hour(), 12);
        assert_eq!(parse_time("20261128123045").unwrap().second(), 45);
        assert!(parse_time("2026112").is_err());
        assert!(parse_time("20261128x").is_err());
    }
}
