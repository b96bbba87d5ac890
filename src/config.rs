//! Configuration: flags > environment (the systemd `EnvironmentFile=`) > env file > defaults, validated once.

use std::ffi::OsString;
use std::fs;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};

use gix::ObjectId;

use crate::cli::{ReportArgs, SecretsArgs, SyncArgs, TrustArgs};
use crate::fleet::FleetSettings;
use crate::hostkey::{HostKeys, ssh_command};
use crate::layout::Layout;
use crate::notify::Target;
use crate::parse::{parse_duration, parse_size};
use crate::polling::PollingSettings;
use crate::redact;
use crate::report::ReportSettings;
use crate::secret_file::{check_not_writable_by_others, check_private_file, credential, read_secret_file};
use crate::secrets::SecretsSettings;
use crate::secrets::identity::{DEFAULT_IDENTITY, IdentitySource};
use crate::secrets::tmpfs::Base;
use crate::signers::AllowedSigners;
use crate::verify::Trust;

/// Where the env file is looked for when `--config` is not given.
pub const DEFAULT_ENV_FILE: &str = "/etc/gitops/gitops.env";

/// Validated settings for one `gitops sync` run.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Remote repository URL or path, as given.
    pub repo_url: String,
    /// The repository URL with any password replaced, for logs and the entrypoint.
    pub repo_url_display: String,
    /// Full ref to fetch (`refs/heads/main`, `refs/tags/prod`); None follows the remote's HEAD.
    pub source_ref: Option<String>,
    /// The state directory: lock, state.json, cache, revisions, logs.
    pub layout: Layout,
    /// Entrypoint path relative to the checkout root (no `..`, not absolute).
    pub entrypoint: PathBuf,
    /// How long the entrypoint may run before its process group is killed.
    pub apply_timeout: Duration,
    /// The health check after a successful entrypoint.
    pub health: crate::health::HealthSettings,
    /// `--rollback`: yes or no on this host; None leaves it to the commit's `.gitops/rollout`.
    pub rollback: Option<bool>,
    /// How long a fetch may take.
    pub fetch_timeout: Duration,
    /// Largest checkout accepted, in bytes.
    pub max_checkout_size: u64,
    /// Most files, symlinks and directories a checkout may create.
    pub max_checkout_files: u64,
    /// Revisions kept on disk, the live one included (≥ 1).
    pub keep_revisions: usize,
    /// Consecutive failures of one commit before giving up on it (≥ 1).
    pub max_attempts: u32,
    /// The ssh command gix runs for ssh remotes, with host-key checking enforced.
    pub ssh_command: String,
    /// HTTPS credentials (user, token) from a file or systemd credential.
    pub http_credentials: Option<(String, String)>,
    /// CA bundle for https:// remotes.
    pub http_ca_file: Option<PathBuf>,
    /// Where the server's host key is pinned (for explaining a refused key).
    pub host_keys: HostKeys,
    /// Signature verification, when an allowed_signers file is configured.
    pub trust: Option<Trust>,
    /// How `*.age` secrets are decrypted for the entrypoint.
    pub secrets: SecretsSettings,
    /// Notifications and metrics.
    pub report: ReportSettings,
    /// Entrypoint logs kept.
    pub keep_logs: usize,
    /// This host's name as given to the entrypoint.
    pub hostname: String,
    /// Print the plan, change nothing.
    pub dry_run: bool,
    /// With `dry_run`: print the diff too.
    pub diff: bool,
    /// Ignore the max-attempts limit once.
    pub retry: bool,
    /// Deploy a rewound branch.
    pub allow_rewind: bool,
    /// Deploy a diverged branch.
    pub allow_diverged: bool,
    /// Inventory, teardown, reboots, splay.
    pub fleet: FleetSettings,
    /// This host's testing branch (`--testing-branch` with `{host}` filled in).
    pub testing: Option<TestingBranch>,
    /// Re-run the live commit's entrypoint when its last successful run is older than this.
    pub reapply_every: Option<Duration>,
    /// Mirrors and the change probe.
    pub polling: PollingSettings,
}

/// A per-host testing branch, deployed instead of the branch while it descends from the branch's tip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TestingBranch {
    /// Full ref, e.g. `refs/heads/testing/web-1`.
    pub reference: String,
    /// Its branch name, e.g. `testing/web-1`.
    pub name: String,
}

/// `--testing-branch PATTERN` for this host: `{host}` replaced, checked to be a branch name other than the deployed ref.
fn testing_branch(pattern: &str, hostname: &str, source_ref: Option<&str>) -> anyhow::Result<TestingBranch> {
    let name = pattern.trim().replace("{host}", hostname);
    let reference = format!("refs/heads/{name}");
    if name.is_empty() || gix::validate::reference::name(reference.as_str().into()).is_err() {
        bail!(
            "--testing-branch {pattern:?} gives {name:?} for host {hostname:?}, not a valid branch name; use e.g. testing/{{host}}"
        );
    }
    if source_ref == Some(reference.as_str()) {
        bail!(
            "--testing-branch {pattern:?} names the deployed branch itself; use another branch, e.g. testing/{{host}}"
        );
    }
    Ok(TestingBranch { reference, name })
}

/// Signature verification from flags; None when no allowed_signers file is configured or provided as a credential.
pub fn trust(args: TrustArgs) -> anyhow::Result<Option<Trust>> {
    let Some(path) = args.allowed_signers.or_else(|| credential("allowed-signers")) else {
        if args.verify_since.is_some() {
            bail!("--verify-since needs --allowed-signers; set both or neither");
        }
        return Ok(None);
    };
    check_not_writable_by_others(&path, "--allowed-signers")?;
    let signers = AllowedSigners::load(&path)?;
    let since = args
        .verify_since
        .map(|hex| {
            ObjectId::from_hex(hex.as_bytes()).map_err(|_| {
                anyhow!("--verify-since {hex:?} is not a full commit id; use the 40-hex id of the first signed commit")
            })
        })
        .transpose()?;
    Ok(Some(Trust { signers, policy: args.policy, since }))
}

/// The age identity (checked like a deploy key when configured; the default is read only if it exists) and
/// where secrets directories go.
fn secrets_settings(args: SecretsArgs) -> anyhow::Result<SecretsSettings> {
    let configured = args
        .age_identity
        .map(|path| IdentitySource { path, what: "--age-identity" })
        .or_else(|| credential("age-identity").map(|path| IdentitySource { path, what: "credential age-identity" }));
    if let Some(source) = &configured {
        check_private_file(&source.path, source.what)?;
    }
    let identity_explicit = configured.is_some();
    let identity = configured
        .unwrap_or_else(|| IdentitySource { path: PathBuf::from(DEFAULT_IDENTITY), what: "age identity (host key)" });
    let base = Base::choose(args.secrets_dir, std::env::var("RUNTIME_DIRECTORY").ok().as_deref());
    Ok(SecretsSettings { identity, identity_explicit, base })
}

/// Notification targets, HMAC key and metrics file; URLs and key are registered as secrets.
fn report_settings(args: ReportArgs) -> anyhow::Result<ReportSettings> {
    let mut specs = args.notify;
    let file: Option<(PathBuf, &str)> = args
        .notify_file
        .map(|f| (f, "--notify-file"))
        .or_else(|| credential("notify-url").map(|f| (f, "credential notify-url")));
    if let Some((file, what)) = file {
        check_private_file(&file, what)?;
        let text = fs::read_to_string(&file).with_context(|| format!("{what} {}: cannot read it", file.display()))?;
        specs.extend(text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#')).map(String::from));
    }
    let mut targets = Vec::new();
    for (index, spec) in specs.iter().enumerate() {
        redact::register(spec.split_once("://").map_or(spec.as_str(), |(_, rest)| rest));
        let target = Target::parse(spec)
            .map_err(|e| anyhow!("notification URL #{} (not shown: it is a secret): {e}", index + 1))?;
        redact::register(&target.url);
        targets.push(target);
    }
    let secret: Option<(PathBuf, &str)> = args
        .notify_secret_file
        .map(|f| (f, "--notify-secret-file"))
        .or_else(|| credential("notify-secret").map(|f| (f, "credential notify-secret")));
    let secret = match secret {
        Some((file, what)) => Some(read_secret_file(&file, what, "the shared HMAC key")?.into_bytes()),
        None => None,
    };
    // Set by Settings::from_args once the polling flags are read.
    Ok(ReportSettings {
        targets,
        notify_on: args.notify_on,
        secret,
        metrics_file: args.metrics_file,
        fetch_info: false,
    })
}

/// Find the env file named by `--config`/`GITOPS_CONFIG` in raw args, before clap parses them.
pub fn env_file_from_args(args: &[OsString]) -> Option<PathBuf> {
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let arg = arg.to_string_lossy();
        if arg == "--" {
            break;
        }
        if arg == "--config" {
            return iter.next().map(PathBuf::from);
        }
        if let Some(value) = arg.strip_prefix("--config=") {
            return Some(PathBuf::from(value));
        }
    }
    std::env::var_os("GITOPS_CONFIG").map(PathBuf::from)
}

/// Parse `KEY=VALUE` lines as systemd's `EnvironmentFile=` does (comments, blank lines, optional quotes).
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((key, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected KEY=VALUE", n + 1));
        };
        let key = key.trim();
        let valid_start = key.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !valid_start || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: {key:?} is not a valid variable name", n + 1));
        }
        let value = value.trim();
        let value = match (value.chars().next(), value.chars().last()) {
            (Some(q @ ('"' | '\'')), Some(end)) if value.len() >= 2 && end == q => &value[1..value.len() - 1],
            _ => value,
        };
        pairs.push((key.to_string(), value.to_string()));
    }
    Ok(pairs)
}

/// Load the env file into the process environment without overriding variables already set.
///
/// Must run before any thread starts (it mutates the environment) and before clap parses,
/// so that a manual run sees exactly the configuration the service sees.
pub fn load_env_file(explicit: Option<&Path>) -> anyhow::Result<()> {
    let path = match explicit {
        Some(path) => path.to_path_buf(),
        None if Path::new(DEFAULT_ENV_FILE).exists() => PathBuf::from(DEFAULT_ENV_FILE),
        None => return Ok(()),
    };
    let text = fs::read_to_string(&path).with_context(|| {
        format!("config file {}: cannot read it; create it or point --config at an existing file", path.display())
    })?;
    let pairs = parse_env_file(&text).map_err(|e| anyhow!("config file {}: {e}; fix that line", path.display()))?;
    for (key, value) in pairs {
        if std::env::var_os(&key).is_none() {
            // SAFETY: called from main before any other thread exists.
            unsafe { std::env::set_var(key, value) };
        }
    }
    Ok(())
}

impl Settings {
    /// Validate sync flags into settings; every error names the setting, the reason and the fix.
    pub fn from_args(args: SyncArgs) -> anyhow::Result<Settings> {
        let repo_url = args
            .repo_url
            .or_else(|| std::env::var("REPO_URL").ok())
            .filter(|url| !url.trim().is_empty())
            .ok_or_else(|| {
                anyhow!("no repository configured: pass --repo-url URL or set GITOPS_REPO_URL in {DEFAULT_ENV_FILE}")
            })?;
        let source_ref = match (&args.branch, &args.reference) {
            (Some(branch), _) => {
                let full = format!("refs/heads/{branch}");
                gix::validate::reference::name(full.as_str().into()).map_err(|e| {
                    anyhow!("--branch {branch:?} is not a valid branch name ({e}); pass a name like main")
                })?;
                Some(full)
            }
            (None, Some(reference)) => {
                if !reference.starts_with("refs/") || gix::validate::reference::name(reference.as_str().into()).is_err()
                {
                    bail!(
                        "--ref {reference:?} is not a full ref name; use e.g. refs/tags/prod (or --branch for a branch)"
                    );
                }
                Some(reference.clone())
            }
            (None, None) => None,
        };
        let layout = Layout::from_flag(args.state_dir)?;
        let entrypoint = PathBuf::from(&args.entrypoint);
        if args.entrypoint.is_empty()
            || !entrypoint.components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
        {
            bail!(
                "--entrypoint {:?} must be a path inside the repository (relative, no '..'); e.g. run.sh or bin/apply",
                args.entrypoint
            );
        }
        let apply_timeout = parse_duration(&args.apply_timeout)
            .map_err(|e| anyhow!("--apply-timeout {:?}: {e}; use e.g. 90s, 30m or 2h", args.apply_timeout))?;
        let fetch_timeout = parse_duration(&args.fetch_timeout)
            .map_err(|e| anyhow!("--fetch-timeout {:?}: {e}; use e.g. 90s or 10m", args.fetch_timeout))?;
        let max_checkout_size = parse_size(&args.max_checkout_size)
            .map_err(|e| anyhow!("--max-checkout-size {:?}: {e}; use e.g. 500M or 2G", args.max_checkout_size))?;
        if args.keep_revisions == 0 {
            bail!("--keep-revisions 0: the live revision must be kept; use 1 or more");
        }
        if args.max_attempts == 0 {
            bail!("--max-attempts 0: at least one attempt is needed; use 1 or more");
        }
        let ssh_key = match (args.ssh_key, args.use_host_key) {
            (Some(key), _) => Some((key, "--ssh-key")),
            (None, true) => Some((PathBuf::from(HOST_KEY), "--use-host-key")),
            (None, false) => credential("ssh-key").map(|key| (key, "credential ssh-key")),
        };
        if let Some((key, what)) = &ssh_key {
            check_private_file(key, what)?;
        }
        let host_keys = match (args.known_hosts, args.accept_new_host_key) {
            (Some(known_hosts), _) => {
                fs::metadata(&known_hosts).with_context(|| {
                    format!(
                        "--known-hosts {}: cannot read it; point it at the file pinning the server's host key",
                        known_hosts.display()
                    )
                })?;
                HostKeys::Pinned(known_hosts)
            }
            (None, true) => HostKeys::TrustOnFirstUse(layout.known_hosts()),
            (None, false) => HostKeys::SystemDefaults,
        };
        let ssh_command = ssh_command(ssh_key.as_ref().map(|(key, _)| key.as_path()), &host_keys, &layout.ssh_log());
        let http_credentials = match args
            .http_token_file
            .map(|f| (f, "--http-token-file"))
            .or_else(|| credential("http-token").map(|f| (f, "credential http-token")))
        {
            Some((file, what)) => Some((args.http_user, read_secret_file(&file, what, "the token")?)),
            None => None,
        };
        if let Some(ca) = &args.http_ca_file {
            fs::metadata(ca)
                .with_context(|| format!("--http-ca-file {}: cannot read it; check the path", ca.display()))?;
        }
        let http_ca_file = args.http_ca_file.map(|ca| std::path::absolute(&ca).unwrap_or(ca));
        let trust = trust(args.trust)?;
        let secrets = secrets_settings(args.secrets)?;
        let keep_logs = args.report.keep_logs.max(1);
        let mut report = report_settings(args.report)?;
        let hostname = match args.host {
            Some(host) => host,
            None => kernel_hostname()?,
        };
        let fleet = FleetSettings::from_args(args.fleet, &hostname)?;
        let testing = args
            .testing_branch
            .filter(|pattern| !pattern.trim().is_empty())
            .map(|pattern| testing_branch(&pattern, &hostname, source_ref.as_deref()))
            .transpose()?;
        let reapply_every = match args.reapply_every.as_deref().map(str::trim).filter(|t| !t.is_empty() && *t != "off")
        {
            Some(text) => {
                let every = parse_duration(text)
                    .map_err(|e| anyhow!("--reapply-every {text:?}: {e}; use e.g. 1h or 1d (or off)"))?;
                if every.is_zero() {
                    bail!("--reapply-every {text:?}: zero would re-apply on every run; use e.g. 1h, or off");
                }
                Some(every)
            }
            None => None,
        };
        let health =
            crate::health::HealthSettings::from_args(&args.health_timeout, args.health_retries, &args.health_interval)?;
        let rollback = match args.rollback.as_deref().map(str::trim) {
            None | Some("") => None,
            Some("yes" | "true" | "on" | "1") => Some(true),
            Some("no" | "false" | "off" | "0") => Some(false),
            Some(other) => bail!("--rollback {other:?}: use yes or no (GITOPS_ROLLBACK=yes)"),
        };
        let polling = PollingSettings::from_args(args.polling)?;
        report.fetch_info = !polling.mirrors.is_empty() || polling.probe.is_some();
        redact::register_url(&repo_url);
        Ok(Settings {
            repo_url_display: redact::url(&repo_url),
            repo_url,
            source_ref,
            layout,
            entrypoint,
            apply_timeout,
            health,
            rollback,
            fetch_timeout,
            max_checkout_size,
            max_checkout_files: args.max_checkout_files,
            keep_revisions: args.keep_revisions,
            max_attempts: args.max_attempts,
            ssh_command,
            http_credentials,
            http_ca_file,
            host_keys,
            trust,
            secrets,
            report,
            keep_logs,
            hostname,
            dry_run: args.dry_run,
            diff: args.diff,
            retry: args.retry,
            allow_rewind: args.allow_rewind,
            allow_diverged: args.allow_diverged,
            fleet,
            testing,
            reapply_every,
            polling,
        })
    }
}

/// The host's own key, usable as a deploy key (`--use-host-key`).
const HOST_KEY: &str = "/etc/ssh/ssh_host_ed25519_key";

fn kernel_hostname() -> anyhow::Result<String> {
    let name = fs::read_to_string("/proc/sys/kernel/hostname")
        .context("reading /proc/sys/kernel/hostname; pass --host NAME instead")?;
    Ok(name.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_syntax() {
        let pairs = parse_env_file("# c\n\nGITOPS_REPO_URL=\"ssh://g/x\"\nexport REPO_URL='a b'\nGITOPS_BRANCH=main\n")
            .unwrap();
        assert_eq!(
            pairs,
            vec![
                ("GITOPS_REPO_URL".into(), "ssh://g/x".into()),
                ("REPO_URL".into(), "a b".into()),
                ("GITOPS_BRANCH".into(), "main".into())
            ]
        );
        assert!(parse_env_file("no equals sign").unwrap_err().contains("line 1"));
        assert!(parse_env_file("BAD-NAME=1").is_err());
    }

    #[test]
    fn testing_branch_pattern() {
        let web = testing_branch("testing/{host}", "web-1", Some("refs/heads/main")).unwrap();
        assert_eq!((web.name.as_str(), web.reference.as_str()), ("testing/web-1", "refs/heads/testing/web-1"));
        assert!(testing_branch("testing/{host}", "bad host", None).unwrap_err().to_string().contains("not a valid"));
        assert!(testing_branch("main", "web-1", Some("refs/heads/main")).unwrap_err().to_string().contains("itself"));
    }

    #[test]
    fn env_file_found_in_args() {
        let args: Vec<OsString> = ["gitops", "sync", "--config=/x.env"].iter().map(OsString::from).collect();
        assert_eq!(env_file_from_args(&args), Some(PathBuf::from("/x.env")));
        let args: Vec<OsString> = ["gitops", "--config", "/y", "sync"].iter().map(OsString::from).collect();
        assert_eq!(env_file_from_args(&args), Some(PathBuf::from("/y")));
    }
}
