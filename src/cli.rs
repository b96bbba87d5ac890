//! Command-line definitions: every flag has a `GITOPS_*` environment fallback.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::notify::NotifyOn;
use crate::outcome::{Outcome, exit_codes_help, sync_exit_codes_help};
use crate::reboot::Strategy;
use crate::verify::Policy;

/// The default trigger: wait out a gitops.service run already in progress (the timer's, or one
/// started by hand), then start a new one and wait for it to finish.
///
/// Blocking on purpose: `systemctl start` on a oneshot unit that is already running joins that
/// run instead of starting another, and that run may have fetched before the push. Waiting for
/// it first, and keeping the worker busy while our own run lasts, is what makes "a push during a
/// run gets one more run after it" hold for systemd too.
pub const DEFAULT_TRIGGER_COMMAND: &str = "while [ \"$(systemctl show --property=ActiveState --value gitops.service)\" = activating ]; do sleep 1; done; exec systemctl start gitops.service";

/// Exit codes of `gitops webhook`, shown in its `--help`.
fn webhook_exit_codes_help() -> String {
    exit_codes_help([
        (Outcome::Success, "stopped after --idle-timeout without requests".into()),
        (Outcome::Runtime, "runtime error (cannot listen on --listen)".into()),
        (
            Outcome::Usage,
            "usage or configuration error (no secret, secret file readable by others, bad flag or socket)".into(),
        ),
    ])
}

/// Exit codes of `gitops secrets`, shown in its `--help`.
fn secrets_exit_codes_help() -> String {
    exit_codes_help([
        (Outcome::Success, "done".into()),
        (Outcome::Runtime, "runtime error, or `list` found secrets not encrypted as .gitops/recipients says".into()),
        (
            Outcome::Usage,
            "usage error (no .gitops/recipients, no rule for the file, a host without a public key)".into(),
        ),
        (Outcome::SecretsFailed, "a secret cannot be decrypted with the given identities, or was tampered with".into()),
    ])
}

/// Exit codes of `gitops suspend` and `gitops resume`, shown in their `--help`.
fn suspend_exit_codes_help() -> String {
    exit_codes_help([
        (Outcome::Success, "done".into()),
        (Outcome::Runtime, "runtime error (the state directory cannot be written)".into()),
        (Outcome::Usage, "usage error (bad --for or --reason, untrusted --state-dir)".into()),
    ])
}

/// Exit codes of `gitops fleet`, shown in its `--help`.
fn fleet_exit_codes_help() -> String {
    exit_codes_help(Outcome::FLEET.map(|o| {
        let meaning = match o {
            Outcome::Success => "every host is at the tip and healthy (a pending reboot aside)",
            Outcome::Runtime => "Prometheus or the repository could not be asked (the message names the URL)",
            Outcome::Usage => "usage error (bad flag, selector or duration)",
            other => other.meaning(),
        };
        (o, meaning.to_string())
    }))
}

/// Exit codes of `gitops check`, shown in its `--help`.
fn check_exit_codes_help() -> String {
    exit_codes_help([
        (Outcome::Success, "clean: hosts would take what was checked".into()),
        (Outcome::CheckFindings, Outcome::CheckFindings.meaning().into()),
        (Outcome::Usage, "usage error (bad flag or revision, PATH not in a Git repository)".into()),
    ])
}

/// Pull-based GitOps agent: fetch a Git repository, verify it, apply it by running its entrypoint.
///
/// Each `gitops sync` does one fetch → decide → checkout → apply → record cycle and exits with a
/// code that tells up-to-date, applied, need-push, diverged and failures apart. A systemd timer
/// (gitops.timer, installed by `gitops install-units --enable`) or cron runs it every few minutes.
/// Every commit is checked out beside the live one and published by renaming a symlink, then its
/// entrypoint (run.sh) runs; a failed apply is retried on the next run.
#[derive(Debug, Parser)]
#[command(name = "gitops", version = env!("GITOPS_VERSION"), after_help = sync_exit_codes_help(), propagate_version = true)]
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
    /// Run one fetch → decide → verify → checkout → apply → record cycle and exit with its code.
    #[command(after_help = sync_exit_codes_help())]
    Sync(Box<SyncArgs>),
    /// Print the signature verdict for a commit (or range) without applying anything; exit 31 if refused.
    Verify(VerifyArgs),
    /// Show the deployed commit and the last run from the state directory (no network); exit 1 when unhealthy.
    Status(StatusArgs),
    /// Print the entrypoint log of the last run, or of a given commit, after a header saying which run it was.
    Logs(LogsArgs),
    /// List the deploy history from the state directory, newest first (no network).
    History(HistoryArgs),
    /// Encrypt, edit, re-key and list the repository's age secrets (*.age) for the hosts in .gitops/recipients.
    #[command(after_help = secrets_exit_codes_help())]
    Secrets(SecretsCommand),
    /// Hold this host: sync changes nothing and exits 11 until `gitops resume` or --for runs out.
    #[command(after_help = suspend_exit_codes_help())]
    Suspend(SuspendArgs),
    /// Lift `gitops suspend`: the next sync runs as usual.
    #[command(after_help = suspend_exit_codes_help())]
    Resume(ResumeArgs),
    /// Check a working tree (what git commit would record) or commits as hosts would read them, before the push;
    /// every finding at once, exit 1 if any.
    #[command(after_help = check_exit_codes_help())]
    Check(CheckArgs),
    /// Ask Prometheus which host runs which commit, who is behind, failing, stale or missing, and why; exit 0 when converged.
    #[command(after_help = fleet_exit_codes_help())]
    Fleet(FleetViewArgs),
    /// Serve forge push webhooks (POST /hooks/push, GET /healthz) and start a sync for each push to the deployed branch.
    #[command(after_help = webhook_exit_codes_help())]
    Webhook(WebhookArgs),
    /// Write the systemd units into ROOT/etc/systemd/system; with --enable, enable the timer (no running systemd needed).
    InstallUnits(InstallUnitsArgs),
    /// Write the man pages or the shell completions into a directory (for packages).
    ///
    /// Hidden: only builds with the `generate` feature have it, and the binaries that are shipped
    /// do not, so the pages and completions it writes leave it out.
    #[cfg(feature = "generate")]
    #[command(hide = true)]
    Generate(GenerateArgs),
}

/// Signature verification flags, shared by `sync` and `verify`.
#[derive(Debug, Args)]
pub struct TrustArgs {
    /// OpenSSH allowed_signers file: when set, only commits signed by these keys are applied
    /// [default: $CREDENTIALS_DIRECTORY/allowed-signers when present].
    #[arg(long, env = "GITOPS_ALLOWED_SIGNERS", value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,

    /// Which commits must be signed: every new commit (all) or only the one deployed (head).
    #[arg(long = "verify", env = "GITOPS_VERIFY", value_enum, default_value = "all", value_name = "POLICY")]
    pub policy: Policy,

    /// Commit (full id) from which on history is signed: it and its ancestors are not checked.
    #[arg(long, env = "GITOPS_VERIFY_SINCE", value_name = "COMMIT")]
    pub verify_since: Option<String>,
}

/// Flags of `gitops verify`.
#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Commit, ref or range A..B to verify [default: the last fetched remote commit, or HEAD with --repo].
    pub rev: Option<String>,

    /// Verify in this local repository instead of the state directory's cache (e.g. in the config repo's CI).
    #[arg(long, value_name = "DIR")]
    pub repo: Option<PathBuf>,

    /// State directory whose cache and deployed commit are used [default: as for sync].
    #[arg(long, env = "GITOPS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    #[command(flatten)]
    pub trust: TrustArgs,
}

/// `gitops secrets` and its actions. Run them in a working clone of the repository: `.gitops/recipients`
/// is looked up in the current directory (the file's, for encrypt and edit) and above.
#[derive(Debug, Args)]
pub struct SecretsCommand {
    #[command(subcommand)]
    pub action: SecretsAction,
}

/// What `gitops secrets` does.
#[derive(Debug, Subcommand)]
pub enum SecretsAction {
    /// Encrypt FILE to FILE.age for the hosts and admins .gitops/recipients gives it (FILE is left as it is).
    Encrypt {
        /// The plaintext file.
        file: PathBuf,
        /// Write ASCII-armored age (PEM-like text) instead of binary.
        #[arg(short, long)]
        armor: bool,
    },
    /// Decrypt FILE.age into a private temporary file, run $VISUAL/$EDITOR on it, re-encrypt it if it
    /// changed, and overwrite and remove the temporary file (a missing FILE.age starts empty).
    Edit {
        /// The secret.
        file: PathBuf,
        /// Private key to decrypt with, an admin's SSH or age key (repeatable) [default: ~/.ssh/id_ed25519, ~/.ssh/id_rsa].
        #[arg(short = 'i', long = "identity", value_name = "FILE")]
        identity: Vec<PathBuf>,
        /// Write ASCII-armored age (an armored file stays armored anyway).
        #[arg(short, long)]
        armor: bool,
    },
    /// Re-encrypt every secret for the recipients .gitops/recipients gives it now (after adding, removing or
    /// re-keying a host); prints who was added and removed per file.
    Rekey {
        /// Private key to decrypt with, an admin's SSH or age key (repeatable) [default: ~/.ssh/id_ed25519, ~/.ssh/id_rsa].
        #[arg(short = 'i', long = "identity", value_name = "FILE")]
        identity: Vec<PathBuf>,
    },
    /// List every secret with who can read it (from its header), flagging those .gitops/recipients gives to
    /// someone else (exit 1 then).
    List,
}

/// Flags of `gitops install-units`.
#[derive(Debug, Args)]
pub struct InstallUnitsArgs {
    /// Root of the system to install into: an image or chroot being built, or / for this host.
    #[arg(long, default_value = "/", value_name = "DIR")]
    pub root: PathBuf,

    /// Enable gitops.timer with the symlink `systemctl enable` would make (in timers.target.wants/).
    #[arg(long)]
    pub enable: bool,
}

/// Flags of `gitops generate`.
#[cfg(feature = "generate")]
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// What to write: man pages (gitops.1, gitops-SUBCOMMAND.1) or completions (bash, zsh, fish).
    #[arg(value_enum)]
    pub what: Generated,

    /// Directory to write into (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// The artefacts `gitops generate` can write.
#[cfg(feature = "generate")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Generated {
    /// Man pages, section 1.
    Man,
    /// Completion scripts for bash, zsh and fish.
    Completions,
}

/// Flags of `gitops sync`.
#[derive(Debug, Args)]
pub struct SyncArgs {
    /// Repository to pull: path, file://, git://, http(s)://, ssh:// or user@host:path (alias env REPO_URL).
    #[arg(long, env = "GITOPS_REPO_URL", hide_env_values = true, value_name = "URL")]
    pub repo_url: Option<String>,

    /// Branch to deploy [default: the remote's default branch].
    #[arg(long, env = "GITOPS_BRANCH", conflicts_with = "reference")]
    pub branch: Option<String>,

    /// Full ref to deploy instead of a branch, e.g. refs/tags/prod (an annotated tag's signature is checked too).
    #[arg(long = "ref", env = "GITOPS_REF", value_name = "REF")]
    pub reference: Option<String>,

    /// State directory [default: $STATE_DIRECTORY, else /var/lib/gitops].
    #[arg(long, env = "GITOPS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Program to run, relative to the repository root.
    #[arg(long, env = "GITOPS_ENTRYPOINT", default_value = "run.sh", value_name = "PATH")]
    pub entrypoint: String,

    /// Kill the entrypoint's process group after this long (e.g. 90s, 30m, 2h).
    #[arg(long, env = "GITOPS_APPLY_TIMEOUT", default_value = "30m", value_name = "DURATION")]
    pub apply_timeout: String,

    /// Give up a fetch that has not finished after this long (exit 1, nothing changed).
    #[arg(long, env = "GITOPS_FETCH_TIMEOUT", default_value = "10m", value_name = "DURATION")]
    pub fetch_timeout: String,

    /// Refuse a commit whose checkout would be larger than this (e.g. 500M, 2G).
    #[arg(long, env = "GITOPS_MAX_CHECKOUT_SIZE", default_value = "1G", value_name = "SIZE")]
    pub max_checkout_size: String,

    /// Refuse a commit whose checkout would create more files, symlinks and directories than this
    /// (every one costs an inode, however small).
    #[arg(long, env = "GITOPS_MAX_CHECKOUT_FILES", default_value_t = 100_000, value_name = "N")]
    pub max_checkout_files: u64,

    /// How many checked-out revisions to keep (the live one included).
    #[arg(long, env = "GITOPS_KEEP_REVISIONS", default_value_t = 3, value_name = "N")]
    pub keep_revisions: usize,

    /// Consecutive failed applies of one commit before giving up on it until a newer commit or --retry.
    #[arg(long, env = "GITOPS_MAX_ATTEMPTS", default_value_t = 3, value_name = "N")]
    pub max_attempts: u32,

    /// Go back to the previous commit when a commit fails its entrypoint or health check (yes or no)
    /// [default: what rollback= in the commit's .gitops/rollout says, else no].
    #[arg(long, env = "GITOPS_ROLLBACK", value_name = "yes|no", num_args = 0..=1, default_missing_value = "yes")]
    pub rollback: Option<String>,

    /// Kill a health check (health.sh beside the entrypoint) that has not finished after this long.
    #[arg(long, env = "GITOPS_HEALTH_TIMEOUT", default_value = "60s", value_name = "DURATION")]
    pub health_timeout: String,

    /// Run a failing health check again this many times before the apply counts as failed.
    #[arg(long, env = "GITOPS_HEALTH_RETRIES", default_value_t = 3, value_name = "N")]
    pub health_retries: u32,

    /// The pause between two tries of the health check.
    #[arg(long, env = "GITOPS_HEALTH_INTERVAL", default_value = "5s", value_name = "DURATION")]
    pub health_interval: String,

    /// Private key for ssh:// and user@host:path remotes (must not be readable by group/others) [default: the systemd credential ssh-key, if passed].
    #[arg(long, env = "GITOPS_SSH_KEY", value_name = "FILE")]
    pub ssh_key: Option<PathBuf>,

    /// known_hosts file pinning the server's host key (host-key checking is never disabled).
    #[arg(long, env = "GITOPS_KNOWN_HOSTS", value_name = "FILE", conflicts_with = "accept_new_host_key")]
    pub known_hosts: Option<PathBuf>,

    /// Trust the server's host key on first use, then pin it in the state directory; a changed key is refused.
    #[arg(long, env = "GITOPS_ACCEPT_NEW_HOST_KEY")]
    pub accept_new_host_key: bool,

    /// Use this host's own /etc/ssh/ssh_host_ed25519_key as the deploy key (register its .pub with the Git server).
    #[arg(long, env = "GITOPS_USE_HOST_KEY", conflicts_with = "ssh_key")]
    pub use_host_key: bool,

    /// File holding an HTTPS token (sent as the password; never logged) [default: $CREDENTIALS_DIRECTORY/http-token].
    #[arg(long, env = "GITOPS_HTTP_TOKEN_FILE", value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,

    /// CA certificate(s) to trust for https:// remotes (e.g. a private CA), instead of the system's.
    #[arg(long, env = "GITOPS_HTTP_CA_FILE", value_name = "FILE")]
    pub http_ca_file: Option<PathBuf>,

    /// User name sent with the HTTPS token.
    #[arg(long, env = "GITOPS_HTTP_USER", default_value = "git", value_name = "NAME")]
    pub http_user: String,

    /// Name of this host given to the entrypoint [default: the kernel hostname].
    #[arg(long, env = "GITOPS_HOST", value_name = "NAME")]
    pub host: Option<String>,

    /// Fetch and print what would be done; change nothing else; exit with the code the real run would have.
    #[arg(long, env = "GITOPS_DRY_RUN")]
    pub dry_run: bool,

    /// With --dry-run: print the diff of what would change (secrets and redacted values never shown).
    #[arg(long, requires = "dry_run")]
    pub diff: bool,

    /// Try a commit again even though it already failed --max-attempts times.
    #[arg(long)]
    pub retry: bool,

    /// Deploy a remote branch that was rewound behind the deployed commit (otherwise exit 20).
    #[arg(long, env = "GITOPS_ALLOW_REWIND")]
    pub allow_rewind: bool,

    /// Deploy a remote branch whose history diverged from the deployed commit (otherwise exit 21).
    #[arg(long, env = "GITOPS_ALLOW_DIVERGED")]
    pub allow_diverged: bool,

    /// Branch this host deploys instead while it exists and descends from the branch's tip, e.g.
    /// testing/{host} ({host} is --host); deleted or merged, the host goes back to the branch.
    #[arg(long, env = "GITOPS_TESTING_BRANCH", value_name = "PATTERN")]
    pub testing_branch: Option<String>,

    /// Re-run the live commit's entrypoint when its last successful run is older than this (drift repair) [default: off].
    #[arg(long, env = "GITOPS_REAPPLY_EVERY", value_name = "DURATION")]
    pub reapply_every: Option<String>,

    #[command(flatten)]
    pub trust: TrustArgs,

    #[command(flatten, next_help_heading = "Secrets")]
    pub secrets: SecretsArgs,

    #[command(flatten)]
    pub report: ReportArgs,

    #[command(flatten, next_help_heading = "Fleet")]
    pub fleet: FleetArgs,

    #[command(flatten, next_help_heading = "Large fleets")]
    pub polling: crate::polling::PollingArgs,
}

/// Secrets flags of `gitops sync`: how `*.age` files in the repository are decrypted for the entrypoint.
#[derive(Debug, Args)]
pub struct SecretsArgs {
    /// Private key that decrypts this host's `*.age` secrets: ssh-ed25519, ssh-rsa or age X25519 (mode 0600)
    /// [default: the systemd credential age-identity, else /etc/ssh/ssh_host_ed25519_key when it exists].
    #[arg(long, env = "GITOPS_AGE_IDENTITY", value_name = "FILE")]
    pub age_identity: Option<PathBuf>,

    /// Directory in which each entrypoint run gets its private secrets directory ($GITOPS_SECRETS_DIR); not
    /// checked for tmpfs [default: $RUNTIME_DIRECTORY, else /run/gitops/secrets, which must be tmpfs or ramfs].
    #[arg(long, env = "GITOPS_SECRETS_BASE_DIR", value_name = "DIR")]
    pub secrets_dir: Option<PathBuf>,
}

/// Reporting flags of `gitops sync`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Notify this webhook ([discord:|slack:|json:]URL; repeatable; a secret: never logged).
    #[arg(long = "notify", env = "GITOPS_NOTIFY", hide_env_values = true, value_delimiter = ' ', value_name = "URL")]
    pub notify: Vec<String>,

    /// File with notification URLs, one per line (mode 0600) [default: $CREDENTIALS_DIRECTORY/notify-url].
    #[arg(long, env = "GITOPS_NOTIFY_FILE", value_name = "FILE")]
    pub notify_file: Option<PathBuf>,

    /// Key for the X-Gitops-Signature HMAC on generic JSON notifications [default: $CREDENTIALS_DIRECTORY/notify-secret].
    #[arg(long, env = "GITOPS_NOTIFY_SECRET_FILE", value_name = "FILE")]
    pub notify_secret_file: Option<PathBuf>,

    /// Which runs to report.
    #[arg(long, env = "GITOPS_NOTIFY_ON", value_enum, default_value = "change", value_name = "WHEN")]
    pub notify_on: NotifyOn,

    /// Rewrite this Prometheus textfile after every run (for node_exporter's textfile collector).
    #[arg(long, env = "GITOPS_METRICS_FILE", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,

    /// Entrypoint logs kept in the state directory.
    #[arg(long, env = "GITOPS_KEEP_LOGS", default_value_t = 20, value_name = "N")]
    pub keep_logs: usize,
}

/// Flags of `gitops status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// State directory [default: as for sync].
    #[arg(long, env = "GITOPS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Print the machine-readable document instead.
    #[arg(long)]
    pub json: bool,

    /// Unhealthy (exit 1) when the last success is older than this.
    #[arg(long, default_value = "1h", value_name = "DURATION")]
    pub max_age: String,
}

/// Flags of `gitops suspend`.
#[derive(Debug, Args)]
pub struct SuspendArgs {
    /// State directory [default: as for sync].
    #[arg(long, env = "GITOPS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Why: shown by sync's log, `gitops status` and notifications.
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// End the hold by itself after this long (e.g. 30m, 4h) [default: until `gitops resume`].
    #[arg(long = "for", value_name = "DURATION")]
    pub for_duration: Option<String>,
}

/// Flags of `gitops resume`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// State directory [default: as for sync].
    #[arg(long, env = "GITOPS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Flags of `gitops fleet`.
#[derive(Debug, Args)]
pub struct FleetViewArgs {
    /// Prometheus base URL, e.g. http://prometheus:9090 (user:password@ is sent as basic auth, never shown).
    #[arg(long, env = "GITOPS_PROMETHEUS", hide_env_values = true, value_name = "URL")]
    pub prometheus: String,

    /// Label matchers that pick the hosts' series, e.g. '{job="node"}' [default: every gitops series].
    #[arg(
        long,
        visible_alias = "prometheus-selector",
        env = "GITOPS_PROMETHEUS_SELECTOR",
        default_value = "",
        hide_default_value = true,
        value_name = "MATCHERS"
    )]
    pub selector: String,

    /// Only hosts deploying this branch.
    #[arg(long, value_name = "BRANCH")]
    pub branch: Option<String>,

    /// Ask this repository for the tip of --branch (its HEAD without one) and the hosts it names
    /// (hosts/<name>/, .gitops/hosts; those that never reported are missing): a fetch of the tip
    /// alone into a temporary directory, with the ssh, host-key and token settings `gitops sync`
    /// reads (flags' env vars, the env file).
    #[arg(long, value_name = "URL", conflicts_with_all = ["tip", "repo"])]
    pub repo_url: Option<String>,

    /// The commit that counts as the tip of --branch, instead of the newest one its hosts report.
    #[arg(long, value_name = "COMMIT")]
    pub tip: Option<String>,

    /// A local repository or checkout that has --tip: the hosts its tree names (hosts/<name>/,
    /// .gitops/hosts) that never reported are missing.
    #[arg(long, value_name = "DIR", requires = "tip")]
    pub repo: Option<PathBuf>,

    /// Subdirectory of the repository that is the config root, as on the hosts (hosts/ and
    /// .gitops/hosts are read in it).
    #[arg(long, env = "GITOPS_PATH", value_name = "DIR")]
    pub path: Option<String>,

    /// A host whose last run is older than this is stale (e.g. three timer periods).
    #[arg(long, default_value = "15m", value_name = "DURATION")]
    pub stale: String,

    /// How long a host that stopped reporting is still listed.
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    pub lookback: String,

    /// List every host, not only those that need a look.
    #[arg(long)]
    pub all: bool,

    /// Print the JSON document (schema in the README) instead of the table.
    #[arg(long, conflicts_with = "html")]
    pub json: bool,

    /// Also write the summary and every host as one self-contained HTML page.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,
}

/// Flags of `gitops check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// A directory of the repository's working tree: what `git commit` would record there (the index; a hook's
    /// GIT_INDEX_FILE) is checked, not the files on disk.
    #[arg(default_value = ".", value_name = "PATH")]
    pub path: PathBuf,

    /// Check this commit (or a tag or branch) instead of the index.
    #[arg(long, value_name = "REV", conflicts_with = "range")]
    pub rev: Option<String>,

    /// Check the tree of B, and with --allowed-signers every commit in A..B as a host deployed at A verifies
    /// them (A all zeros, as a pre-push hook or a new branch's push event gives it: B's whole history).
    #[arg(long, value_name = "A..B")]
    pub range: Option<String>,

    /// Check the entrypoint and stages of this host (repeatable) [default: every host the repository names].
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,

    /// OpenSSH allowed_signers file the hosts verify with: with --rev or --range, every commit must be signed
    /// by a key in it.
    #[arg(long, value_name = "FILE")]
    pub allowed_signers: Option<PathBuf>,

    /// Output: text (path:line: finding), json (schema in the README) or github (workflow annotations).
    #[arg(long, value_enum, default_value = "text", value_name = "FORMAT")]
    pub format: crate::check::output::Format,

    /// Subdirectory of the repository that is the hosts' config root (their --path).
    #[arg(long = "path", env = "GITOPS_PATH", value_name = "DIR")]
    pub config_root: Option<String>,

    /// The entrypoint hosts run, relative to the config root (their --entrypoint).
    #[arg(long, env = "GITOPS_ENTRYPOINT", default_value = "run.sh", value_name = "PATH")]
    pub entrypoint: String,

    /// The teardown script next to the entrypoint (their --teardown).
    #[arg(long, env = "GITOPS_TEARDOWN", default_value = "teardown.sh", value_name = "NAME")]
    pub teardown: String,

    /// The hosts' --max-checkout-size: a larger checkout is refused.
    #[arg(long, env = "GITOPS_MAX_CHECKOUT_SIZE", default_value = "1G", value_name = "SIZE")]
    pub max_checkout_size: String,

    /// The hosts' --max-checkout-files: a checkout with more files, symlinks and directories is refused.
    #[arg(long, env = "GITOPS_MAX_CHECKOUT_FILES", default_value_t = 100_000, value_name = "N")]
    pub max_checkout_files: u64,
}

/// Flags of `gitops logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// Commit (or a prefix) whose log to print [default: the last attempt].
    pub commit: Option<String>,

    /// State directory [default: as for sync].
    #[arg(long, env = "GITOPS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

/// Flags of `gitops history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// State directory [default: as for sync].
    #[arg(long, env = "GITOPS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// Print the machine-readable document instead.
    #[arg(long)]
    pub json: bool,

    /// Show the newest N attempts.
    #[arg(short = 'n', long = "limit", default_value_t = 20, value_name = "N")]
    pub limit: usize,
}

/// Flags of `gitops webhook`.
#[derive(Debug, Args)]
pub struct WebhookArgs {
    /// Address to listen on, e.g. 127.0.0.1:9419 [default: the socket systemd passes (gitops-webhook.socket)].
    #[arg(long, env = "GITOPS_WEBHOOK_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<String>,

    /// File holding the shared webhook secret (mode 0600) [default: the systemd credential webhook-secret].
    #[arg(long, env = "GITOPS_WEBHOOK_SECRET_FILE", value_name = "FILE")]
    pub secret_file: Option<PathBuf>,

    /// Branch whose pushes trigger a sync [default: the repository's default branch named in the payload].
    #[arg(long, env = "GITOPS_BRANCH")]
    pub branch: Option<String>,

    /// Command run by /bin/sh to start a sync; runs one at a time, pushes meanwhile make one more run
    /// [default: wait for a gitops.service run in progress, then `systemctl start gitops.service`].
    #[arg(
        long,
        env = "GITOPS_WEBHOOK_TRIGGER",
        value_name = "COMMAND",
        default_value = DEFAULT_TRIGGER_COMMAND,
        hide_default_value = true
    )]
    pub trigger_command: String,

    /// Exit after this long without requests and with no run going on [default: 60s when socket-activated, never with --listen].
    #[arg(long, env = "GITOPS_WEBHOOK_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<String>,

    /// Time a client gets to send the request head, and again the body, before it is dropped.
    #[arg(long, env = "GITOPS_WEBHOOK_READ_TIMEOUT", default_value = "10s", value_name = "DURATION")]
    pub read_timeout: String,

    /// Largest request body accepted (K, M, G as for sizes elsewhere); larger ones get 413.
    #[arg(long, env = "GITOPS_WEBHOOK_MAX_BODY_SIZE", default_value = "1M", value_name = "SIZE")]
    pub max_body_size: String,

    /// Connections served at once; more are answered 503 and closed.
    #[arg(long, env = "GITOPS_WEBHOOK_MAX_CONNECTIONS", default_value_t = 16, value_name = "N")]
    pub max_connections: usize,

    /// Requests per minute from one source address (burst of the same size); more get 429.
    #[arg(long, env = "GITOPS_WEBHOOK_RATE_LIMIT_PER_SOURCE", default_value_t = 30, value_name = "N")]
    pub rate_limit_per_source: u32,

    /// Requests per minute from all sources together (burst of the same size); more get 429.
    #[arg(long, env = "GITOPS_WEBHOOK_RATE_LIMIT_TOTAL", default_value_t = 120, value_name = "N")]
    pub rate_limit_total: u32,
}

/// Fleet flags of `gitops sync`: inventory, teardown, reboots, splay, the rollout gate's Prometheus.
#[derive(Debug, Args)]
pub struct FleetArgs {
    /// Subdirectory of the repository that is the config root: the entrypoint, hosts/ and .gitops/ are looked up in it.
    #[arg(long, env = "GITOPS_PATH", value_name = "DIR")]
    pub path: Option<String>,

    /// This host's tags, comma-separated; passed to the entrypoint as GITOPS_TAGS.
    #[arg(long, env = "GITOPS_TAGS", value_name = "TAG,...")]
    pub tags: Option<String>,

    /// Script next to the entrypoint that the outgoing revision runs before a new revision goes live.
    #[arg(long, env = "GITOPS_TEARDOWN", default_value = "teardown.sh", value_name = "NAME")]
    pub teardown: String,

    /// Do not run the outgoing revision's teardown this once (when it is broken: a new commit cannot fix it).
    #[arg(long)]
    pub skip_teardown: bool,

    /// When a requested reboot may happen [default: fleetlock with --fleetlock-url, window with --reboot-window,
    /// else immediate].
    #[arg(long, env = "GITOPS_REBOOT_STRATEGY", value_enum, value_name = "STRATEGY")]
    pub reboot_strategy: Option<Strategy>,

    /// Maintenance window in host local time, e.g. "Mon-Fri 02:00-04:00" or "Sat,Sun 22:00-06:00"; ';' separates several.
    #[arg(long, env = "GITOPS_REBOOT_WINDOW", value_name = "WINDOW")]
    pub reboot_window: Option<String>,

    /// Shell command that reboots the host (shutdown -r now on hosts without systemd).
    #[arg(long, env = "GITOPS_REBOOT_COMMAND", default_value = "systemctl reboot --no-block", value_name = "COMMAND")]
    pub reboot_command: String,

    /// FleetLock server (e.g. airlock) that hands out reboot slots, so the fleet never reboots all at once.
    #[arg(long, env = "GITOPS_FLEETLOCK_URL", hide_env_values = true, value_name = "URL")]
    pub fleetlock_url: Option<String>,

    /// FleetLock group of this host.
    #[arg(long, env = "GITOPS_FLEETLOCK_GROUP", default_value = "default", value_name = "NAME")]
    pub fleetlock_group: String,

    /// This host's identity for the FleetLock server [default: /etc/machine-id].
    #[arg(long, env = "GITOPS_FLEETLOCK_ID", value_name = "ID")]
    pub fleetlock_id: Option<String>,

    /// Sleep a random time up to this long before fetching (cron hosts; systemd timers use RandomizedDelaySec).
    #[arg(long, env = "GITOPS_SPLAY", value_name = "DURATION")]
    pub splay: Option<String>,

    /// Prometheus for rollout gates (`gate=prometheus` in .gitops/rollout); user:password@ is sent as basic auth.
    #[arg(long, env = "GITOPS_PROMETHEUS", hide_env_values = true, value_name = "URL")]
    pub prometheus: Option<String>,

    /// Label matchers of the fleet's series in that Prometheus, e.g. '{job="node"}'.
    #[arg(long, env = "GITOPS_PROMETHEUS_SELECTOR", default_value = "", value_name = "MATCHERS")]
    pub prometheus_selector: String,
}
