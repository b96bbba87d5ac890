//! `gitops check`: what the fleet would refuse in a commit (or in what `git commit` would record now), found
//! before the push with the parsers and limits the hosts use, and every finding at once.
//!
//! Each finding class has its own module; each reads a [`Snapshot`] and adds to a [`Report`]. Nothing here
//! prints or exits: `commands::check` does.

pub mod output;
mod policy;
mod scripts;
mod secrets;
pub mod signatures;
pub mod snapshot;
mod tree;

use std::path::{Path, PathBuf};

use snapshot::Snapshot;

/// What kind of mistake a finding is; its name is stable (the JSON output and the README use it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// A path component hosts refuse (`.git`, an invalid or duplicate name).
    Name,
    /// The checkout is over `--max-checkout-size` or `--max-checkout-files`.
    Size,
    /// A symlink that leads out of the repository.
    Symlink,
    /// `.gitops/rollout`.
    Rollout,
    /// `.gitops/hosts`.
    Hosts,
    /// `.gitops/recipients`, and the host keys it names.
    Recipients,
    /// An entrypoint, teardown or health check: present, executable in Git, a `#!` line, its shell's `-n`.
    Script,
    /// An `*.age` file: readable by hosts, encrypted to exactly whom `.gitops/recipients` says.
    Secret,
    /// A secret's plaintext committed beside it.
    Plaintext,
    /// A commit not signed by an allowed key.
    Signature,
}

impl Class {
    /// The name in the output.
    pub const fn name(self) -> &'static str {
        match self {
            Class::Name => "name",
            Class::Size => "size",
            Class::Symlink => "symlink",
            Class::Rollout => "rollout",
            Class::Hosts => "hosts",
            Class::Recipients => "recipients",
            Class::Script => "script",
            Class::Secret => "secret",
            Class::Plaintext => "plaintext",
            Class::Signature => "signature",
        }
    }
}

/// Whether a finding fails the check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Hosts would refuse or fail: exit 1.
    Error,
    /// Something that could not be checked, said so that nobody takes silence for a pass.
    Note,
}

/// One thing found: where, and what is wrong with how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// Which kind of mistake.
    pub class: Class,
    /// Error or note.
    pub level: Level,
    /// The file, relative to the repository root; None for the whole tree or a commit.
    pub path: Option<PathBuf>,
    /// The line in that file, from 1.
    pub line: Option<usize>,
    /// The commit, for a signature.
    pub commit: Option<String>,
    /// What is wrong; how to fix it.
    pub message: String,
}

impl Finding {
    /// An error about `path` (at `line`).
    pub fn at(class: Class, path: &Path, line: Option<usize>, message: impl Into<String>) -> Finding {
        let message = message.into();
        Finding { class, level: Level::Error, path: Some(path.to_path_buf()), line, commit: None, message }
    }

    /// An error about the whole tree.
    pub fn tree(class: Class, message: impl Into<String>) -> Finding {
        Finding { class, level: Level::Error, path: None, line: None, commit: None, message: message.into() }
    }

    /// The same, as a note.
    pub fn note(self) -> Finding {
        Finding { level: Level::Note, ..self }
    }
}

/// How the hosts are set up, as far as what they read depends on it.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config root inside the repository (`--path`); empty for the repository root.
    pub root: PathBuf,
    /// The hosts whose entrypoints and stages to check (`--host`); empty: every host the repository names.
    pub hosts: Vec<String>,
    /// The entrypoint's name (`--entrypoint`).
    pub entrypoint: PathBuf,
    /// The teardown's name (`--teardown`).
    pub teardown: PathBuf,
    /// `--max-checkout-size`, in bytes.
    pub max_size: u64,
    /// `--max-checkout-files`.
    pub max_entries: u64,
}

impl Settings {
    /// `relative` (to the config root) as a path relative to the repository root.
    fn at(&self, relative: impl AsRef<Path>) -> PathBuf {
        self.root.join(relative)
    }
}

/// What was looked at, for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Files, symlinks, directories and submodules in the tree.
    pub entries: usize,
    /// Entrypoints and stages checked.
    pub scripts: usize,
    /// `*.age` files checked.
    pub secrets: usize,
    /// Commits whose signature was checked.
    pub commits: usize,
}

/// Every finding, and what was checked.
#[derive(Debug, Default)]
pub struct Report {
    /// In the order they were found; `output` sorts them.
    pub findings: Vec<Finding>,
    /// What was checked.
    pub counts: Counts,
}

impl Report {
    fn add(&mut self, finding: Finding) {
        if !self.findings.contains(&finding) {
            self.findings.push(finding);
        }
    }

    /// The findings that fail the check.
    pub fn errors(&self) -> usize {
        self.findings.iter().filter(|f| f.level == Level::Error).count()
    }
}

/// Check the tree of `snapshot` as the hosts would read it.
pub fn check(snapshot: &Snapshot, settings: &Settings) -> anyhow::Result<Report> {
    let mut report = Report::default();
    report.counts.entries = snapshot.len();
    tree::check(snapshot, settings, &mut report)?;
    let hosts = policy::hosts(snapshot, settings, &mut report)?;
    policy::rollout(snapshot, settings, &hosts, &mut report)?;
    scripts::check(snapshot, settings, &hosts, &mut report)?;
    secrets::check(snapshot, settings, &hosts, &mut report)?;
    Ok(report)
}
