//! `.gitops/recipients`: which keys each secret is encrypted to (the role of agenix's `secrets.nix`).
//!
//! ```text
//! # admins can decrypt every secret (gitops secrets edit/rekey -i their key)
//! admin ssh-ed25519 AAAAC3Nza… alice@laptop
//! admin age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p
//! # PATTERN  WHO…  (host names, age1… keys, ssh-ed25519/ssh-rsa keys); every matching line adds
//! hosts/web1/**   web1
//! shared/*.age    web1 web2 db1
//! ```
//!
//! Patterns are relative to the config root; `*` and `?` stay within one path component, `**` spans any
//! number, a pattern without `/` matches the file name in any directory, one ending in `/` everything below.
//! A pattern matches the `.age` file's path or the same path without `.age`. A host name stands for the key
//! in `hosts/<name>/ssh_host_ed25519_key.pub` (or `ssh_host_rsa_key.pub`).

use std::path::Path;

use anyhow::{Context, anyhow};
use base64::Engine;
use sha2::Digest;

/// Where the recipients file lives, relative to the config root.
pub const FILE: &str = ".gitops/recipients";

/// A public key, as written in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Key {
    /// `age1…`, or `ssh-TYPE BASE64` without the comment.
    pub text: String,
    /// How reports name it: the host, or the key's comment, or its start.
    pub label: String,
}

/// Who a rule gives a secret to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Who {
    /// A host, by the name of its directory under `hosts/`.
    Host(String),
    /// A key written out.
    Key(Key),
}

/// One `PATTERN WHO…` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The path pattern.
    pub pattern: String,
    /// Who may read what it matches.
    pub who: Vec<Who>,
}

/// The parsed recipients file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recipients {
    /// Keys that can decrypt every secret.
    pub admins: Vec<Key>,
    /// The rules, in file order.
    pub rules: Vec<Rule>,
}

/// Parse the file's text; an error names the line.
pub fn parse(text: &str) -> Result<Recipients, String> {
    let mut recipients = Recipients::default();
    for (index, line) in text.lines().enumerate() {
        match parse_line(line).map_err(|e| format!("line {}: {e}", index + 1))? {
            Some(Line::Admin(key)) => recipients.admins.push(key),
            Some(Line::Rule(rule)) => recipients.rules.push(rule),
            None => {}
        }
    }
    Ok(recipients)
}

/// What one line of the file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// `admin KEY [comment]`.
    Admin(Key),
    /// `PATTERN WHO…`.
    Rule(Rule),
}

/// Parse one line (lines do not depend on each other, so `gitops check` reads them one by one); None for a
/// blank line or a comment.
pub fn parse_line(line: &str) -> Result<Option<Line>, String> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let mut words = line.split_whitespace();
    let first = words.next().unwrap_or_default();
    let rest: Vec<&str> = words.collect();
    if first == "admin" {
        return admin_key(&rest).map(|key| Some(Line::Admin(key)));
    }
    let who = whos(&rest)?;
    if who.is_empty() {
        return Err(format!("pattern {first:?} names no recipient; add host names or keys after it"));
    }
    Ok(Some(Line::Rule(Rule { pattern: first.to_string(), who })))
}

/// `admin KEY [comment]`: one key, the rest of the line its comment.
fn admin_key(words: &[&str]) -> Result<Key, String> {
    match words {
        [age, ..] if age.starts_with("age1") => Ok(Key { text: age.to_string(), label: short(age) }),
        [kind, blob, comment @ ..] if kind.starts_with("ssh-") => {
            let text = format!("{kind} {blob}");
            let label = if comment.is_empty() { short(blob) } else { comment.join(" ") };
            Ok(Key { text, label })
        }
        _ => Err("expected `admin age1…` or `admin ssh-ed25519 AAAA… [comment]`".into()),
    }
}

/// The recipients after a pattern: host names, `age1…` keys and `ssh-TYPE BASE64` pairs.
fn whos(words: &[&str]) -> Result<Vec<Who>, String> {
    let mut who = Vec::new();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        if word.starts_with("age1") {
            who.push(Who::Key(Key { text: word.to_string(), label: short(word) }));
        } else if word.starts_with("ssh-") {
            let blob = words.next().ok_or_else(|| format!("{word} needs its base64 key after it"))?;
            who.push(Who::Key(Key { text: format!("{word} {blob}"), label: short(blob) }));
        } else if crate::inventory::is_plain_name(word) && !word.contains(char::is_whitespace) {
            who.push(Who::Host(word.to_string()));
        } else {
            return Err(format!("{word:?} is neither a host name nor a key"));
        }
    }
    Ok(who)
}

/// A key shortened for reports.
fn short(key: &str) -> String {
    let end = key.char_indices().nth(16).map_or(key.len(), |(i, _)| i);
    format!("{}…", &key[..end])
}

impl Recipients {
    /// Everyone who may read the secret at `path` (relative to the config root): the rules that match, in
    /// order, without repeats; None when no rule matches (admins alone do not make a secret deployable).
    pub fn for_path(&self, path: &str) -> Option<Vec<&Who>> {
        let mut who: Vec<&Who> = Vec::new();
        let mut matched = false;
        for rule in self.rules.iter().filter(|rule| matches(&rule.pattern, path)) {
            matched = true;
            for w in &rule.who {
                if !who.contains(&w) {
                    who.push(w);
                }
            }
        }
        matched.then_some(who)
    }
}

/// Whether `pattern` matches `path` (the `.age` path, or that path without `.age`).
pub fn matches(pattern: &str, path: &str) -> bool {
    let plain = path.strip_suffix(super::decrypt::SUFFIX).filter(|p| !p.is_empty());
    std::iter::once(path).chain(plain).any(|candidate| glob(pattern, candidate))
}

fn glob(pattern: &str, path: &str) -> bool {
    let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
    let owned;
    let pattern = if let Some(dir) = pattern.strip_suffix('/') {
        owned = format!("{dir}/**");
        owned.as_str()
    } else {
        pattern
    };
    let path_parts: Vec<&str> = path.split('/').collect();
    if !pattern.contains('/') {
        return path_parts.last().is_some_and(|name| segment(pattern.as_bytes(), name.as_bytes()));
    }
    let pattern_parts: Vec<&str> = pattern.split('/').collect();
    segments(&pattern_parts, &path_parts)
}

fn segments(pattern: &[&str], path: &[&str]) -> bool {
    match pattern.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| segments(rest, &path[skip..])),
        Some((first, rest)) => path
            .split_first()
            .is_some_and(|(name, names)| segment(first.as_bytes(), name.as_bytes()) && segments(rest, names)),
    }
}

fn segment(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len()).any(|skip| segment(rest, &name[skip..])),
        Some((b'?', rest)) => !name.is_empty() && segment(rest, &name[1..]),
        Some((c, rest)) => name.first() == Some(c) && segment(rest, &name[1..]),
    }
}

/// Read `.gitops/recipients` in the config root `root`.
pub fn load(root: &Path) -> anyhow::Result<Recipients> {
    let path = root.join(FILE);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "{}: cannot read it; create it with one `PATTERN host…` line per secret (see the README's Secrets section)",
            path.display()
        )
    })?;
    parse(&text).map_err(|e| anyhow!("{}: {e}", path.display()))
}

/// The files a host's public key is read from, in `hosts/<name>/`, first found wins.
pub const HOST_KEY_FILES: [&str; 2] = ["ssh_host_ed25519_key.pub", "ssh_host_rsa_key.pub"];

/// The public key of host `name`: `hosts/<name>/ssh_host_ed25519_key.pub`, else `ssh_host_rsa_key.pub`.
pub fn host_key(root: &Path, name: &str) -> anyhow::Result<Key> {
    let dir = root.join(crate::inventory::HOSTS_DIR).join(name);
    host_key_in(name, |file| std::fs::read_to_string(root.join(file)).ok()).ok_or_else(|| {
        anyhow!("host {name}: no public key in {}/{}; {HOST_KEY_HINT}", dir.display(), HOST_KEY_FILES[0])
    })
}

/// What to do about a host without a public key in the repository.
pub const HOST_KEY_HINT: &str = "copy it from the host (/etc/ssh/ssh_host_ed25519_key.pub) and commit it";

/// The public key of host `name`, with `read` giving the text of a file relative to the config root (a
/// working clone, or a commit's tree); None when there is none.
pub fn host_key_in(name: &str, read: impl Fn(&Path) -> Option<String>) -> Option<Key> {
    let dir = Path::new(crate::inventory::HOSTS_DIR).join(name);
    HOST_KEY_FILES.iter().find_map(|file| {
        let text = read(&dir.join(file))?;
        let mut words = text.split_whitespace();
        let (kind, blob) = (words.next()?, words.next()?);
        Some(Key { text: format!("{kind} {blob}"), label: name.to_string() })
    })
}

/// The age recipient for a key.
pub fn recipient(key: &Key) -> anyhow::Result<Box<dyn age::Recipient + Send>> {
    if key.text.starts_with("age1") {
        let parsed: age::x25519::Recipient =
            key.text.parse().map_err(|e| anyhow!("key {} is not a valid age1… recipient: {e}", key.label))?;
        Ok(Box::new(parsed))
    } else {
        let parsed: age::ssh::Recipient = key.text.parse().map_err(|e| {
            anyhow!("key {} is not an ssh-ed25519 or ssh-rsa (≥ 2048 bits) public key: {e:?}", key.label)
        })?;
        Ok(Box::new(parsed))
    }
}

/// Encrypt `plaintext` to `keys` as an age file (ASCII-armored when `armor`).
pub fn seal(plaintext: &[u8], keys: &[Key], armor: bool) -> anyhow::Result<Vec<u8>> {
    use std::io::Write;
    let recipients = keys.iter().map(recipient).collect::<anyhow::Result<Vec<_>>>()?;
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| r.as_ref() as &dyn age::Recipient))
        .map_err(|e| anyhow!("encrypting: {e}"))?;
    let format = if armor { age::armor::Format::AsciiArmor } else { age::armor::Format::Binary };
    let mut ciphertext = Vec::with_capacity(plaintext.len() + 512);
    let mut writer = encryptor.wrap_output(age::armor::ArmoredWriter::wrap_output(&mut ciphertext, format)?)?;
    writer.write_all(plaintext)?;
    writer.finish()?.finish()?;
    Ok(ciphertext)
}

/// Whether an age file is ASCII-armored (re-encrypting keeps the form it had).
pub fn is_armored(ciphertext: &[u8]) -> bool {
    ciphertext.trim_ascii_start().starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----")
}

/// The 4-byte tag an age header names an SSH recipient by (base64 of the first bytes of the key's SHA-256);
/// None for age1… keys, whose stanzas name no one.
pub fn ssh_tag(key: &Key) -> Option<String> {
    let blob = key.text.split_whitespace().nth(1)?;
    let wire = base64::engine::general_purpose::STANDARD.decode(blob).ok()?;
    let digest = sha2::Sha256::digest(&wire);
    Some(base64::engine::general_purpose::STANDARD_NO_PAD.encode(&digest[..4]))
}

/// The recipient stanzas in an age file's header: (type, first argument) pairs, e.g. ("ssh-ed25519", tag).
pub fn stanzas(ciphertext: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    use std::io::BufRead;
    let mut reader = std::io::BufReader::new(age::armor::ArmoredReader::new(ciphertext));
    let mut line = Vec::new();
    let mut stanzas = Vec::new();
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).context("reading the age header")? == 0 || line.starts_with(b"---") {
            break;
        }
        if let Some(stanza) = line.strip_prefix(b"-> ") {
            let text = String::from_utf8_lossy(stanza);
            let mut words = text.split_whitespace();
            let kind = words.next().unwrap_or_default().to_string();
            // age adds random "grease" stanzas so that parsers keep tolerating unknown types; they name no one.
            if kind.ends_with("-grease") {
                continue;
            }
            stanzas.push((kind, words.next().unwrap_or_default().to_string()));
        }
    }
    Ok(stanzas)
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE_TEXT: &str = "\
# who reads what
admin ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ alice@laptop
admin age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p

hosts/web1/**   web1
shared/*.age    web1 db1 ssh-rsa AAAAB3Nza
tls.key         web1 web2
";

    #[test]
    fn the_file_parses_into_admins_and_rules() {
        let r = parse(FILE_TEXT).unwrap();
        assert_eq!(r.admins.len(), 2);
        assert_eq!(r.admins[0].text, "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJ");
        assert_eq!(r.admins[0].label, "alice@laptop");
        assert_eq!(r.rules.len(), 3);
        assert_eq!(r.rules[1].who.len(), 3);
        assert!(matches!(&r.rules[1].who[2], Who::Key(k) if k.text == "ssh-rsa AAAAB3Nza"));
        assert!(parse("secret.age\n").unwrap_err().contains("line 1"));
        assert!(parse("x ssh-ed25519\n").unwrap_err().contains("base64"));
        assert!(parse("admin web1\n").unwrap_err().contains("admin age1"));
    }

    #[test]
    fn patterns_match_paths_with_or_without_the_suffix() {
        assert!(matches("hosts/web1/**", "hosts/web1/db.pass.age"));
        assert!(matches("hosts/web1/**", "hosts/web1/a/b/c.age"));
        assert!(!matches("hosts/web1/**", "hosts/web10/db.pass.age"));
        assert!(matches("hosts/web1/", "hosts/web1/db.age"));
        assert!(matches("shared/*.age", "shared/token.age"));
        assert!(!matches("shared/*.age", "shared/deeper/token.age"));
        assert!(matches("tls.key", "certs/tls.key.age"), "a bare name matches in any directory");
        assert!(matches("tls.key", "tls.key.age"));
        assert!(!matches("tls.key", "tls.key.bak.age"));
        assert!(matches("**/db?.age", "a/b/db1.age"));
        assert!(matches("./shared/*", "shared/x.age"));
    }

    #[test]
    fn matching_rules_add_up_without_repeats() {
        let r = parse(FILE_TEXT).unwrap();
        let who = r.for_path("shared/tls.key.age").unwrap();
        let hosts: Vec<&str> = who
            .iter()
            .filter_map(|w| match w {
                Who::Host(h) => Some(h.as_str()),
                Who::Key(_) => None,
            })
            .collect();
        assert_eq!(hosts, ["web1", "db1", "web2"]);
        assert!(r.for_path("other/thing.age").is_none());
    }

    #[test]
    fn ssh_tags_are_the_start_of_the_keys_sha256() {
        // The tests in tests/secrets.rs compare tags with the ones the age CLI writes.
        let key = Key {
            text: "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN".into(),
            label: "t".into(),
        };
        let tag = ssh_tag(&key).unwrap();
        assert_eq!(tag.len(), 6);
        assert!(ssh_tag(&Key { text: "age1abc".into(), label: "a".into() }).is_none());
    }
}
