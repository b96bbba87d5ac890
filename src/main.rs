//! `gitops`: parse arguments, set up logging, run one command, map its result to an exit code (only here).

mod apply;
mod changes;
mod check;
mod checkout;
mod cli;
mod clock;
mod commands;
mod commit_id;
mod config;
mod deadline;
mod decide;
mod failpoint;
mod fetch;
mod fleet;
mod fleetview;
mod health;
mod history;
mod hostkey;
mod http;
mod inventory;
mod last_run;
mod layout;
mod live;
mod metrics;
mod notify;
mod outcome;
mod parse;
mod plan;
mod polling;
mod printable;
mod procfs;
#[cfg(test)]
mod proptests;
mod reboot;
mod reconcile;
mod redact;
mod remote_error;
mod report;
mod reuse;
mod rollout;
mod secret_file;
mod secrets;
mod signers;
mod splay;
mod state;
mod suspend;
mod sync;
mod teardown;
mod testing;
mod verify;
mod webhook;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command};
use crate::config::Settings;
use crate::outcome::{Failure, Outcome};

fn main() -> ExitCode {
    // Checkouts, state and logs are private to root; the entrypoint inherits this too.
    // SAFETY: umask(2) only sets the process file-mode mask.
    unsafe { libc::umask(0o077) };
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    // The env file feeds clap's `env` fallbacks, so it is loaded before parsing.
    let env_file = config::load_env_file(config::env_file_from_args(&args).as_deref());
    let cli = Cli::parse_from(&args);
    init_logging(&cli);
    let result = run(cli, env_file);
    let outcome = match result {
        Ok(outcome) => outcome,
        Err(failure) => {
            // Another run holding the lock is harmless (it picks up any change): not an error for cron to mail.
            let level = if failure.outcome == Outcome::Locked { log::Level::Info } else { log::Level::Error };
            log::log!(level, "{}", failure.message());
            failure.outcome
        }
    };
    log_peak_rss();
    ExitCode::from(outcome.code())
}

/// Our own peak RSS (children excluded), for `just bench` and the curious.
///
/// VmHWM, not getrusage: ru_maxrss carries over the high-water mark of the process image that
/// exec'd us (a Python harness, a shell), VmHWM counts only this one.
fn log_peak_rss() {
    if log::log_enabled!(log::Level::Debug) {
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        if let Some(kib) = status.lines().find_map(|l| l.strip_prefix("VmHWM:")) {
            log::debug!("peak-rss-kib={}", kib.trim().trim_end_matches("kB").trim());
        }
    }
}

/// Run the command. `env_file` is the result of loading the env file: install-units and generate
/// read no configuration, so a broken env file does not stop an image build.
fn run(cli: Cli, env_file: anyhow::Result<()>) -> Result<Outcome, Failure> {
    let reads_configuration = match cli.command {
        Command::InstallUnits(_) | Command::Secrets(_) | Command::Check(_) => false,
        #[cfg(feature = "generate")]
        Command::Generate(_) => false,
        _ => true,
    };
    if reads_configuration {
        env_file.map_err(Failure::usage)?;
    }
    match cli.command {
        Command::Sync(args) => {
            let settings = Settings::from_args(*args).map_err(Failure::usage)?;
            sync::sync(&settings)
        }
        Command::Verify(args) => commands::verify::run(args),
        Command::Status(args) => commands::status::status(args),
        Command::History(args) => commands::history::run(args),
        Command::Secrets(args) => commands::secrets::run(args),
        Command::Logs(args) => commands::history::logs(args),
        Command::Suspend(args) => commands::suspend::suspend(args),
        Command::Resume(args) => commands::suspend::resume(args),
        Command::Check(args) => commands::check::run(args),
        Command::Fleet(args) => commands::fleet::run(&args),
        Command::Webhook(args) => {
            webhook::run(args)?;
            // The idle timeout ended it.
            Ok(Outcome::Success)
        }
        Command::InstallUnits(args) => {
            commands::install_units::install(&args.root, args.enable)?;
            Ok(Outcome::Success)
        }
        #[cfg(feature = "generate")]
        Command::Generate(args) => {
            for path in commands::generate::generate(args.what, &args.out)? {
                log::info!("wrote {}", path.display());
            }
            Ok(Outcome::Success)
        }
    }
}

/// sd-daemon priority prefix, so journald files each line at the right level.
fn syslog_priority(level: log::Level) -> u8 {
    match level {
        log::Level::Error => 3,
        log::Level::Warn => 4,
        log::Level::Info => 6,
        log::Level::Debug | log::Level::Trace => 7,
    }
}

fn init_logging(cli: &Cli) {
    let level = match (cli.quiet, cli.verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let mut builder = env_logger::Builder::new();
    builder.parse_filters(&format!("{level},gix=warn"));
    if let Ok(filters) = std::env::var("RUST_LOG") {
        builder.parse_filters(&filters);
    }
    // Under systemd the journal already stamps every line.
    let stamp = std::env::var_os("JOURNAL_STREAM").is_none();
    builder.format(move |out, record| {
        use std::io::Write;
        // Every line passes the redactor: gix or ssh may quote a URL with its token in an error.
        let message = redact::redact(&record.args().to_string());
        if stamp {
            let now = time::OffsetDateTime::now_utc();
            let at = now.format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
            writeln!(out, "[{} {:<5} {}] {message}", &at[..at.len().min(19)], record.level(), record.target())
        } else {
            writeln!(out, "<{}>{}: {message}", syslog_priority(record.level()), record.target())
        }
    });
    builder.init();
}
