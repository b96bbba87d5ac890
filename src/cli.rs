//! Command-line definitions: every flag has a `GITOPS_*` environment fallback.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::outcome::EXIT_CODES_HELP;

/// Pull-based GitOps agent: fetch a Git repository, verify it, apply it by running its entrypoint.
#[derive(Debug, Parser)]
#[command(name = "gitops", version, after_help = EXIT_CODES_HELP, propagate_version = true)]
pub struct Cli {
    /// Environment file with KEY=VALUE lines, read before flags (default /etc/gitops/gitops.env when present).
    #[arg(long, global = true, env = "GITOPS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// More log output (-v debug, -vv trace); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count, conflicts_with = "quiet")]
    pub verbose: u8,

    /// Only warnings and errors.
    #[arg(short, long, global = true)]
    pub quiet: bool,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one fetch → decide → checkout → apply → record cycle and exit with its code.
    #[command(after_help = EXIT_CODES_HELP)]
    Sync(SyncArgs),
}

/// Flags of `gitops sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Repository to pull: path, file://, git://, http(s)://, ssh:// or user@host:path (alias env REPO_URL).
    #[arg(long, env = "GITOPS_REPO_URL", value_name = "URL")]
    pub repo_url: Option<String>,

    /// Branch to deploy [default: the remote's default branch].
    #[arg(long, env = "GITOPS_BRANCH")]
    pub branch: Option<String>,

    /// State directory [default: $STATE_DIRECTORY, else /var/lib/gitops].
    #[arg(long, env = "GITOPS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Program to run, relative to the repository root.
    #[arg(
        long,
        env = "GITOPS_ENTRYPOINT",
        default_value = "run.sh",
        value_name = "PATH"
    )]
    pub entrypoint: String,

    /// Kill the entrypoint's process group after this long (e.g. 90s, 30m, 2h).
    #[arg(
        long,
        env = "GITOPS_APPLY_TIMEOUT",
        default_value = "30m",
        value_name = "DURATION"
    )]
    pub apply_timeout: String,

    /// How many checked-out revisions to keep (the live one included).
    #[arg(
        long,
        env = "GITOPS_KEEP_REVISIONS",
        default_value_t = 3,
        value_name = "N"
    )]
    pub keep_revisions: usize,

    /// Consecutive failed applies of one commit before giving up on it until a newer commit or --retry.
    #[arg(
        long,
        env = "GITOPS_MAX_ATTEMPTS",
        default_value_t = 3,
        value_name = "N"
    )]
    pub max_attempts: u32,

    /// Private key for ssh:// and user@host:path remotes (must not be readable by group/others).
    #[arg(long, env = "GITOPS_SSH_KEY", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,

    /// known_hosts file pinning the server's host key (host-key checking is never disabled).
    #[arg(long, env = "GITOPS_KNOWN_HOSTS", value_name = "FILE")]
    pub known_hosts: Option<PathBuf>,

    /// Name of this host given to the entrypoint [default: the kernel hostname].
    #[arg(long, env = "GITOPS_HOST", value_name = "NAME")]
    pub host: Option<String>,

    /// Fetch and print what would be done; change nothing else; exit with the code the real run would have.
    #[arg(long, env = "GITOPS_DRY_RUN")]
    pub dry_run: bool,

    /// Try a commit again even though it already failed --max-attempts times.
    #[arg(long)]
    pub retry: bool,

    /// Deploy a remote branch that was rewound behind the deployed commit (otherwise exit 20).
    #[arg(long, env = "GITOPS_ALLOW_REWIND")]
    pub allow_rewind: bool,

    /// Deploy a remote branch whose history diverged from the deployed commit (otherwise exit 21).
    #[arg(long, env = "GITOPS_ALLOW_DIVERGED")]
    pub allow_diverged: bool,
}
