//! Secrets, without decrypting anything: `.gitops/recipients` line by line, every `*.age` file's header
//! against whom that file gives it to, and plaintext committed beside its `.age`.
//!
//! An age header has one stanza per recipient. ssh-ed25519 and ssh-rsa stanzas carry a tag, the first 4
//! bytes of the SHA-256 of the recipient's SSH public key, so each can be matched to a key. An X25519 stanza
//! (an `age1…` recipient) carries only an ephemeral share and names nobody: for those, only how many there
//! are can be compared with how many `age1…` keys the file is given to. Other stanza types (plugins) cannot
//! be matched at all, and a note says so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::snapshot::{Kind, Snapshot};
use super::{Class, Finding, Report, Settings};
use crate::secrets::decrypt;
use crate::secrets::recipients::{self, HOST_KEY_FILES, HOST_KEY_HINT, Key, Line, Recipients, Who};

/// Check `.gitops/recipients`, every secret below the config root and the plaintext beside each.
pub fn check(snapshot: &Snapshot, settings: &Settings, hosts: &[String], report: &mut Report) -> anyhow::Result<()> {
    let read = |relative: &Path| -> Option<String> {
        let bytes = snapshot.read(&settings.at(relative)).ok().flatten()?;
        String::from_utf8(bytes).ok()
    };
    let recipients = read_recipients(snapshot, settings, &read, report)?;
    // Every host key in the repository, to name the stanzas of hosts no longer given a secret.
    let mut host_keys: BTreeMap<String, Option<Key>> = BTreeMap::new();
    let named = recipients.iter().flat_map(|r| &r.rules).flat_map(|rule| &rule.who).filter_map(|who| match who {
        Who::Host(name) => Some(name),
        Who::Key(_) => None,
    });
    for name in hosts.iter().chain(named) {
        host_keys.entry(name.clone()).or_insert_with(|| recipients::host_key_in(name, read));
    }
    for (name, key) in &host_keys {
        if let Some(key) = key
            && let Err(e) = recipients::recipient(key)
        {
            let path = key_file(settings, name, &read);
            report.add(Finding::at(Class::Recipients, &path, Some(1), format!("{e:#}; {HOST_KEY_HINT}")));
        }
    }
    let mut known: Vec<Key> = host_keys.values().flatten().cloned().collect();
    if let Some(recipients) = &recipients {
        known.extend(recipients.admins.iter().cloned());
        known.extend(recipients.rules.iter().flat_map(|rule| &rule.who).filter_map(|who| match who {
            Who::Key(key) => Some(key.clone()),
            Who::Host(_) => None,
        }));
    }

    let secrets: Vec<(PathBuf, PathBuf)> = snapshot
        .entries()
        .into_iter()
        .filter(|(_, entry)| matches!(entry.kind, Kind::File | Kind::Executable))
        .filter_map(|(path, _)| {
            let relative = path.strip_prefix(&settings.root).ok()?;
            decrypt::plain_name(relative)?;
            Some((path.to_path_buf(), relative.to_path_buf()))
        })
        .collect();
    if !secrets.is_empty() && recipients.is_none() {
        report.add(
            Finding::at(
                Class::Secret,
                &settings.at(recipients::FILE),
                None,
                format!(
                    "there are {} secrets but no {}, so whom each is for cannot be checked; create it (see the README's Secrets section)",
                    secrets.len(),
                    recipients::FILE
                ),
            )
            .note(),
        );
    }
    for (path, relative) in &secrets {
        report.counts.secrets += 1;
        let Some(ciphertext) = snapshot.read(path)? else { continue };
        plaintext_beside(snapshot, path, report);
        // The first thing every host does with a secret: a header it cannot use stops every run (exit 32).
        if let Err(why) = decrypt::header(&ciphertext) {
            report.add(Finding::at(
                Class::Secret,
                path,
                None,
                format!("{why}: every host with an age identity stops at it (exit 32); encrypt it again with gitops secrets encrypt"),
            ));
            continue;
        }
        let Some(recipients) = &recipients else { continue };
        let stanzas = recipients::stanzas(&ciphertext)?;
        let relative = relative.to_string_lossy();
        match recipients.for_path(&relative) {
            None => report.add(Finding::at(
                Class::Secret,
                path,
                None,
                format!(
                    "no line of {} matches it, so nobody can tell whom it is for and gitops secrets rekey stops at it; add a line `{relative} HOST…`",
                    recipients::FILE
                ),
            )),
            Some(who) => {
                let mut expected: Vec<Key> = Vec::new();
                for w in who {
                    // A host without a key was reported at its line of the recipients file.
                    let key = match w {
                        Who::Host(name) => host_keys.get(name).cloned().flatten(),
                        Who::Key(key) => Some(key.clone()),
                    };
                    expected.extend(key);
                }
                expected.extend(recipients.admins.iter().cloned());
                for message in compare(&stanzas, &expected, &known) {
                    report.add(Finding::at(Class::Secret, path, None, message));
                }
                for kind in stanzas.iter().map(|(kind, _)| kind).filter(|kind| !is_matchable(kind)) {
                    report.add(
                        Finding::at(
                            Class::Secret,
                            path,
                            None,
                            format!("has a {kind} stanza, which names no key gitops can match: that recipient is not checked"),
                        )
                        .note(),
                    );
                }
            }
        }
    }
    Ok(())
}

/// Whether stanzas of this type can be compared with `.gitops/recipients`.
fn is_matchable(kind: &str) -> bool {
    kind == "X25519" || kind == "ssh-ed25519" || kind == "ssh-rsa"
}

/// `.gitops/recipients`, parsed line by line with a finding for each bad line, each host without a public key
/// and each key age cannot encrypt to; None when there is no such file.
fn read_recipients(
    snapshot: &Snapshot,
    settings: &Settings,
    read: &impl Fn(&Path) -> Option<String>,
    report: &mut Report,
) -> anyhow::Result<Option<Recipients>> {
    let path = settings.at(recipients::FILE);
    let Some(bytes) = snapshot.read(&path)? else { return Ok(None) };
    let Ok(text) = String::from_utf8(bytes) else {
        report.add(Finding::at(Class::Recipients, &path, None, "is not UTF-8 text; save it as UTF-8"));
        return Ok(None);
    };
    let mut parsed = Recipients::default();
    for (index, line) in text.lines().enumerate() {
        let n = Some(index + 1);
        let keys: Vec<Key> = match recipients::parse_line(line) {
            Err(why) => {
                let why = format!("{why} (hosts stop at a commit with secrets while it does not parse: exit 32)");
                report.add(Finding::at(Class::Recipients, &path, n, why));
                continue;
            }
            Ok(None) => continue,
            Ok(Some(Line::Admin(key))) => {
                parsed.admins.push(key.clone());
                vec![key]
            }
            Ok(Some(Line::Rule(rule))) => {
                for who in &rule.who {
                    if let Who::Host(name) = who
                        && recipients::host_key_in(name, read).is_none()
                    {
                        report.add(Finding::at(
                            Class::Recipients,
                            &path,
                            n,
                            format!(
                                "host {name} has no public key in {} ({} or {}), so its secrets cannot be encrypted to it; {HOST_KEY_HINT}",
                                settings.at(Path::new(crate::inventory::HOSTS_DIR).join(name)).display(),
                                HOST_KEY_FILES[0],
                                HOST_KEY_FILES[1]
                            ),
                        ));
                    }
                }
                let keys = rule
                    .who
                    .iter()
                    .filter_map(|who| match who {
                        Who::Key(key) => Some(key.clone()),
                        Who::Host(_) => None,
                    })
                    .collect();
                parsed.rules.push(rule);
                keys
            }
        };
        for key in keys {
            if let Err(e) = recipients::recipient(&key) {
                report.add(Finding::at(
                    Class::Recipients,
                    &path,
                    n,
                    format!("{e:#}; replace it with the key's .pub line"),
                ));
            }
        }
    }
    Ok(Some(parsed))
}

/// The file host `name`'s key was read from (for a finding about it).
fn key_file(settings: &Settings, name: &str, read: &impl Fn(&Path) -> Option<String>) -> PathBuf {
    let dir = Path::new(crate::inventory::HOSTS_DIR).join(name);
    let file = HOST_KEY_FILES.iter().map(|f| dir.join(f)).find(|p| read(p).is_some());
    settings.at(file.unwrap_or_else(|| dir.join(HOST_KEY_FILES[0])))
}

/// What is wrong with a header's `stanzas` (type, first argument) for a file meant for `expected`, naming keys
/// from `known`: one message per recipient missing or extra.
fn compare(stanzas: &[(String, String)], expected: &[Key], known: &[Key]) -> Vec<String> {
    let mut problems = Vec::new();
    let ssh = |key: &Key| -> Option<(String, String)> {
        let kind = key.text.split_whitespace().next()?.to_string();
        Some((kind, recipients::ssh_tag(key)?))
    };
    let mut expected_ssh: Vec<(String, String, &Key)> = Vec::new();
    for key in expected {
        if let Some((kind, tag)) = ssh(key)
            && !expected_ssh.iter().any(|(k, t, _)| *k == kind && *t == tag)
        {
            expected_ssh.push((kind, tag, key));
        }
    }
    let missing: Vec<&str> = expected_ssh
        .iter()
        .filter(|(kind, tag, _)| !stanzas.iter().any(|(k, t)| k == kind && t == tag))
        .map(|(_, _, key)| key.label.as_str())
        .collect();
    if !missing.is_empty() {
        problems.push(format!(
            "not encrypted to {}, which {} gives it to: a host given a secret it cannot open stops (exit 32, nothing applied); run gitops secrets rekey and commit",
            missing.join(", "),
            recipients::FILE
        ));
    }
    for (kind, tag) in stanzas.iter().filter(|(kind, _)| kind.starts_with("ssh-")) {
        if expected_ssh.iter().any(|(k, t, _)| k == kind && t == tag) {
            continue;
        }
        let who = known.iter().find(|key| ssh(key).is_some_and(|(k, t)| k == *kind && t == *tag));
        problems.push(match who {
            Some(key) => format!(
                "still encrypted to {}, which {} no longer gives it to: it can read this file; run gitops secrets rekey, commit, and change the value (the old ciphertext stays in history)",
                key.label,
                recipients::FILE
            ),
            None => format!(
                "encrypted to an {kind} key that is no host's or admin's in this repository (tag {tag}); run gitops secrets rekey, and change the value if that key is not yours"
            ),
        });
    }
    // X25519 stanzas name nobody: only their number can be compared.
    let age_keys = expected.iter().filter(|key| key.text.starts_with("age1")).map(|key| &key.text).collect::<Vec<_>>();
    let mut unique_age_keys = age_keys.clone();
    unique_age_keys.sort();
    unique_age_keys.dedup();
    let (want, have) = (unique_age_keys.len(), stanzas.iter().filter(|(kind, _)| kind == "X25519").count());
    if have < want {
        problems.push(format!(
            "has {have} X25519 stanza(s) for {want} age1… recipient(s) in {}: some of them cannot decrypt it; run gitops secrets rekey and commit",
            recipients::FILE
        ));
    } else if have > want {
        problems.push(format!(
            "has {have} X25519 stanza(s) but {} gives it to {want} age1… recipient(s): a key no longer listed may still read it; run gitops secrets rekey, commit, and change the value",
            recipients::FILE
        ));
    }
    problems
}

/// A finding when the plaintext of the secret at `path` (`x.age`) is committed beside it (`x`).
fn plaintext_beside(snapshot: &Snapshot, path: &Path, report: &mut Report) {
    let Some(plain) = decrypt::plain_name(path) else { return };
    if snapshot.get(&plain).is_some_and(|entry| matches!(entry.kind, Kind::File | Kind::Executable)) {
        report.add(Finding::at(
            Class::Plaintext,
            &plain,
            None,
            format!(
                "the plaintext of {} is committed beside it: anyone with the repository can read it; git rm --cached {}, add it to .gitignore, commit, and change the value (it stays in history)",
                path.display(),
                plain.display()
            ),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str, label: &str) -> Key {
        Key { text: text.into(), label: label.into() }
    }

    const WEB1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN";
    const DB1: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDbWnGpoxRDzpKEJsv2XJzAjZ1k+fg4f3xEHbRNa8SPF";

    #[test]
    fn headers_are_compared_by_tag_and_x25519_by_count() {
        let web1 = key(WEB1, "web1");
        let db1 = key(DB1, "db1");
        let tag = |k: &Key| ("ssh-ed25519".to_string(), recipients::ssh_tag(k).unwrap());
        let age = key("age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p", "admin");
        let x25519 = ("X25519".to_string(), "share".to_string());
        let known = [web1.clone(), db1.clone()];
        assert!(compare(&[tag(&web1), x25519.clone()], &[web1.clone(), age.clone()], &known).is_empty());
        let problems = compare(&[tag(&db1)], &[web1.clone(), age.clone()], &known);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].starts_with("not encrypted to web1,"), "{}", problems[0]);
        assert!(problems[1].starts_with("still encrypted to db1,"), "{}", problems[1]);
        assert!(problems[2].starts_with("has 0 X25519 stanza(s) for 1 age1"), "{}", problems[2]);
        let stranger = ("ssh-ed25519".to_string(), "AAAAAA".to_string());
        let problems = compare(&[tag(&web1), stranger, x25519.clone(), x25519], &[web1], &known);
        assert!(problems[0].contains("no host's or admin's") && problems[0].contains("tag AAAAAA"), "{problems:?}");
        assert!(problems[1].starts_with("has 2 X25519 stanza(s) but"), "{problems:?}");
    }
}
