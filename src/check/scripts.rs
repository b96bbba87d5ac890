//! Entrypoints and their stages (teardown, health check) as each host resolves them: present, executable in
//! Git's mode (what the checkout gets, whatever the disk says), a `#!` line, and clean under their shell's `-n`.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::snapshot::{Kind, Snapshot};
use super::{Class, Finding, Report, Settings};
use crate::inventory::{HOSTS_DIR, Inventory};

/// Shells whose `-n` parses a script without running any of it.
const SHELLS: &[&str] = &["sh", "bash", "dash", "ksh", "mksh", "zsh", "ash", "yash", "posh"];

/// At most this many hosts are named in one finding.
const NAMED_HOSTS: usize = 10;

/// Check every script some host would run: its entrypoint, the teardown beside it and its health check.
pub fn check(snapshot: &Snapshot, settings: &Settings, hosts: &[String], report: &mut Report) -> anyhow::Result<()> {
    let exists = |candidate: &Path| snapshot.is_file(&settings.at(candidate));
    let mut who: Vec<Option<&str>> = if settings.hosts.is_empty() {
        hosts.iter().map(|h| Some(h.as_str())).collect()
    } else {
        settings.hosts.iter().map(|h| Some(h.as_str())).collect()
    };
    // Hosts the repository does not name run the shared entrypoint: check it when there is one, or when
    // the repository names no host at all (then it is the only one).
    if settings.hosts.is_empty() && (hosts.is_empty() || exists(&settings.entrypoint)) {
        who.push(None);
    }
    let mut stages: BTreeMap<PathBuf, &'static str> = BTreeMap::new();
    let mut without: Vec<&str> = Vec::new();
    for host in who {
        let inventory =
            Inventory::new(settings.root.clone(), host.unwrap_or(""), Vec::new(), settings.teardown.clone());
        let entrypoint = inventory.resolve(&settings.entrypoint, exists);
        if !exists(&entrypoint) {
            without.push(host.unwrap_or(""));
            continue;
        }
        let teardown = inventory.teardown_for(&entrypoint);
        let health = crate::health::script(&inventory, &entrypoint, exists);
        stages.insert(entrypoint, "entrypoint");
        for (stage, role) in [(Some(teardown), "teardown"), (health, "health check")] {
            if let Some(stage) = stage.filter(|stage| exists(stage)) {
                stages.entry(stage).or_insert(role);
            }
        }
    }
    if !without.is_empty() {
        report.add(missing(settings, &without));
    }
    let mut syntax = Vec::new();
    for (stage, role) in &stages {
        report.counts.scripts += 1;
        syntax.extend(inspect(snapshot, &settings.at(stage), role, report)?);
    }
    for finding in parse_all(syntax) {
        report.add(finding);
    }
    Ok(())
}

/// The finding for hosts that have no entrypoint (`""` stands for hosts the repository does not name).
fn missing(settings: &Settings, without: &[&str]) -> Finding {
    let shared = settings.at(&settings.entrypoint);
    let entrypoint = settings.entrypoint.display();
    let named: Vec<&str> = without.iter().copied().filter(|h| !h.is_empty()).collect();
    let message = if named.is_empty() {
        format!(
            "the entrypoint is missing: every host fails every run (exit 30); add {entrypoint}, or pass --entrypoint with the one hosts use"
        )
    } else {
        let mut list = named.iter().take(NAMED_HOSTS).copied().collect::<Vec<_>>().join(", ");
        if named.len() > NAMED_HOSTS {
            list.push_str(&format!(" and {} more", named.len() - NAMED_HOSTS));
        }
        format!(
            "no entrypoint for {list} (neither {HOSTS_DIR}/<name>/{entrypoint} nor {entrypoint}): they fail every run (exit 30); add one"
        )
    };
    Finding::at(Class::Script, &shared, None, message)
}

/// A script to parse with its shell's `-n`.
struct Parse {
    path: PathBuf,
    role: &'static str,
    shell: PathBuf,
    content: Vec<u8>,
}

/// Check one script at `path` (relative to the repository root); the syntax check to run, if its shell is here.
fn inspect(snapshot: &Snapshot, path: &Path, role: &'static str, report: &mut Report) -> anyhow::Result<Option<Parse>> {
    let Some((target, entry)) = snapshot.follow(path) else { return Ok(None) };
    let via = if target == path { String::new() } else { format!(" (the symlink's target {})", target.display()) };
    if entry.kind == Kind::File {
        report.add(Finding::at(
            Class::Script,
            path,
            None,
            format!(
                "the {role} is not executable in Git{via} (mode 100644, whatever your disk says), so hosts cannot start it (exit 30); chmod +x {0} && git add {0} (or git update-index --chmod=+x {0}) and commit",
                target.display()
            ),
        ));
    }
    let content = snapshot.blob(entry.oid)?;
    // A compiled program has no #! line and no shell.
    if content.starts_with(b"\x7fELF") {
        return Ok(None);
    }
    let first = content.split(|b| *b == b'\n').next().unwrap_or_default();
    let shell = if let Some(shebang) = first.strip_prefix(b"#!") {
        if shebang.ends_with(b"\r") {
            report.add(Finding::at(
                Class::Script,
                path,
                Some(1),
                format!(
                    "the {role}'s #! line ends in a carriage return (Windows line endings): the kernel looks for an interpreter whose name ends in \\r and hosts cannot start it (exit 30); convert the file to LF line endings"
                ),
            ));
        }
        match shell_of(&String::from_utf8_lossy(shebang)) {
            Some(shell) => shell,
            // Another interpreter (python, perl…): present and executable is all that is checked.
            None => return Ok(None),
        }
    } else {
        report.add(Finding::at(
            Class::Script,
            path,
            Some(1),
            format!(
                "the {role} has no #! line: whether hosts can start it depends on their C library (glibc runs it with /bin/sh, others fail with exit 30); make #!/bin/sh (or your shell) its first line"
            ),
        ));
        "sh".to_string()
    };
    match locate(&shell) {
        Some(shell) => Ok(Some(Parse { path: path.to_path_buf(), role, shell, content })),
        None => {
            report.add(
                Finding::at(
                    Class::Script,
                    path,
                    Some(1),
                    format!("not syntax-checked: its shell {shell} is not installed where gitops check runs; install it there"),
                )
                .note(),
            );
            Ok(None)
        }
    }
}

/// The shell a `#!` line names (`/bin/bash -e`, `/usr/bin/env bash`), if it is one of `SHELLS`.
fn shell_of(shebang: &str) -> Option<String> {
    let mut words = shebang.split_whitespace();
    let program = words.next()?;
    let mut name = Path::new(program).file_name()?.to_str()?;
    if name == "env" {
        name = words.find(|w| !w.starts_with('-') && !w.contains('='))?;
    }
    SHELLS.contains(&name).then(|| name.to_string())
}

/// The shell to run here: `name` on PATH. The directory the `#!` line gives is not used: it could point into
/// the checkout being checked, and a repository must not choose what runs on the machine checking it.
fn locate(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).filter(|dir| dir.is_absolute()).map(|dir| dir.join(name)).find(|candidate| {
        std::fs::metadata(candidate).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    })
}

/// Run every script's shell with `-n` (a few at a time: each is a process), and turn what they say into findings.
fn parse_all(parses: Vec<Parse>) -> Vec<Finding> {
    let width = std::thread::available_parallelism().map_or(2, |n| n.get()) * 2;
    let mut findings = Vec::new();
    for batch in parses.chunks(width) {
        std::thread::scope(|scope| {
            let running: Vec<_> = batch.iter().map(|parse| scope.spawn(move || syntax(parse))).collect();
            for (parse, thread) in batch.iter().zip(running) {
                let (line, message) = match thread.join() {
                    Ok(Ok(None)) => continue,
                    Ok(Ok(Some(error))) => error,
                    Ok(Err(e)) => (None, format!("could not run {} -n on it: {e}", parse.shell.display())),
                    Err(_) => (None, format!("could not run {} -n on it", parse.shell.display())),
                };
                let shell = parse.shell.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                findings.push(Finding::at(
                    Class::Script,
                    &parse.path,
                    line,
                    format!(
                        "the {} does not parse ({shell} -n: {message}): hosts run it up to that point, then fail (exit 30); fix it",
                        parse.role
                    ),
                ));
            }
        });
    }
    findings
}

/// `shell -n` on the script (fed on stdin, read as /dev/stdin so that errors carry a line number): None when
/// it parses, else the line and what the shell said.
fn syntax(parse: &Parse) -> anyhow::Result<Option<(Option<usize>, String)>> {
    let mut child = Command::new(&parse.shell)
        .args(["-n", "/dev/stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    let content = &parse.content;
    // A shell that stops reading at the error must not leave us blocked on a full pipe.
    let output = std::thread::scope(|scope| {
        scope.spawn(move || {
            let _ = stdin.write_all(content);
        });
        child.wait_with_output()
    })?;
    if output.status.success() {
        return Ok(None);
    }
    let (line, message) = shell_error(&String::from_utf8_lossy(&output.stderr));
    // "End of file unexpected" is reported on the line after the last one; point at the last one instead.
    let lines = content.split(|b| *b == b'\n').count() - usize::from(content.ends_with(b"\n"));
    Ok(Some((line.map(|n| n.min(lines.max(1))), message)))
}

/// The line and message of a shell's syntax error: `/dev/stdin: 3: Syntax error: …` (dash),
/// `/dev/stdin: line 3: syntax error …` (bash, ksh), `/dev/stdin:3: parse error …` (zsh).
fn shell_error(stderr: &str) -> (Option<usize>, String) {
    let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("syntax error").trim();
    let rest = first.find("/dev/stdin").map_or(first, |at| &first[at + "/dev/stdin".len()..]);
    let rest = rest.trim_start_matches([':', ' ']);
    let rest = rest.strip_prefix("line ").unwrap_or(rest);
    let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    match rest[..digits].parse::<usize>() {
        Ok(line) => (Some(line), rest[digits..].trim_start_matches([':', ' ']).to_string()),
        Err(_) => (None, first.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shells_come_from_the_shebang() {
        assert_eq!(shell_of("/bin/sh").as_deref(), Some("sh"));
        assert_eq!(shell_of("/bin/bash -eu").as_deref(), Some("bash"));
        assert_eq!(shell_of("/usr/bin/env bash").as_deref(), Some("bash"));
        assert_eq!(shell_of("/usr/bin/env -S LC_ALL=C zsh -f").as_deref(), Some("zsh"));
        assert_eq!(shell_of("/builds/repo/tools/sh").as_deref(), Some("sh"), "by name: found on PATH");
        assert_eq!(shell_of("/usr/bin/python3"), None);
        assert_eq!(shell_of("/usr/bin/env python3"), None);
        assert_eq!(shell_of(""), None);
    }

    #[test]
    fn shell_errors_give_their_line() {
        assert_eq!(
            shell_error("/dev/stdin: 3: Syntax error: end of file unexpected (expecting \"fi\")\n"),
            (Some(3), "Syntax error: end of file unexpected (expecting \"fi\")".into())
        );
        assert_eq!(
            shell_error("/dev/stdin: line 2: syntax error near unexpected token `fi'\n/dev/stdin: line 2: `fi'\n"),
            (Some(2), "syntax error near unexpected token `fi'".into())
        );
        assert_eq!(shell_error("/dev/stdin:7: parse error near `}'"), (Some(7), "parse error near `}'".into()));
        assert_eq!(shell_error("weird"), (None, "weird".into()));
    }
}
