//! `gitops generate`: man pages and shell completions, made from the clap definitions so they never drift from `--help`.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

use crate::cli::{Cli, Generated};

/// Write `what` into `out` and return the files written.
pub fn generate(what: Generated, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    // These are public build artefacts for packages, not state: 0755 directories, 0644 files.
    // SAFETY: umask(2) only sets the process file-mode mask.
    unsafe { libc::umask(0o022) };
    fs::create_dir_all(out).with_context(|| format!("--out {}: cannot create it; check the path", out.display()))?;
    match what {
        Generated::Man => man_pages(out),
        Generated::Completions => completions(out),
    }
}

/// `gitops.1` and one `gitops-SUBCOMMAND.1` per visible subcommand, as git and cargo do.
fn man_pages(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    // `gitops help` is clap's, not a page of its own. The pages describe the shipped binary, not
    // the build that writes them: the package version, without this build's commit and target.
    let mut cmd = Cli::command().disable_help_subcommand(true).version(env!("CARGO_PKG_VERSION"));
    // Building sets the subcommands' names to `gitops-sync` and their synopsis to `gitops sync`,
    // and propagates the global flags into them.
    cmd.build();
    let subcommands: Vec<clap::Command> = cmd.get_subcommands().filter(|sub| !sub.is_hide_set()).cloned().collect();
    let see_also: Vec<String> = subcommands.iter().map(|sub| format!("gitops-{}", sub.get_name())).collect();

    let mut written = vec![write_page(out, cmd, &see_also)?];
    for sub in subcommands {
        written.push(write_page(out, sub, &["gitops".to_string()])?);
    }
    Ok(written)
}

/// One page: clap_mangen's sections, then ours (exit status as a table rather than run-on text).
fn write_page(out: &Path, cmd: clap::Command, see_also: &[String]) -> anyhow::Result<PathBuf> {
    // The command's own "Exit codes:" table from its --help, if it has one.
    let exit_codes = exit_code_table(&cmd.get_after_help().map(|help| help.to_string()).unwrap_or_default());
    let has_subcommands = cmd.get_subcommands().any(|s| !s.is_hide_set());
    let source = format!("gitops {}", env!("CARGO_PKG_VERSION"));
    let man = Man::new(cmd).source(source).manual("gitops manual");
    let path = out.join(man.get_filename());
    let mut page: Vec<u8> = Vec::new();
    let render = |page: &mut Vec<u8>| -> std::io::Result<()> {
        man.render_title(page)?;
        man.render_name_section(page)?;
        man.render_synopsis_section(page)?;
        man.render_description_section(page)?;
        man.render_options_section(page)?;
        if has_subcommands {
            man.render_subcommands_section(page)?;
        }
        Ok(())
    };
    render(&mut page).with_context(|| format!("rendering {}", path.display()))?;
    let mut roff = String::new();
    if !exit_codes.is_empty() {
        roff.push_str(".SH \"EXIT STATUS\"\n");
        for (code, meaning) in exit_codes {
            let _ = write!(roff, ".TP\n.B {code}\n{}\n", escape(&meaning));
        }
    }
    if has_subcommands {
        roff.push_str(FILES_AND_ENVIRONMENT);
    }
    roff.push_str(".SH \"SEE ALSO\"\n");
    let mut refs: Vec<String> = see_also.iter().map(|p| format!(".BR {p} (1)")).collect();
    refs.extend(["systemd.timer", "systemd.exec"].iter().map(|p| format!(".BR {p} (5)")));
    // Commas between references, none after the last.
    let last = refs.len() - 1;
    for (i, line) in refs.iter().enumerate() {
        roff.push_str(line);
        roff.push_str(if i < last { " ,\n" } else { "\n" });
    }
    page.extend_from_slice(roff.as_bytes());
    man.render_version_section(&mut page).with_context(|| format!("rendering {}", path.display()))?;
    fs::write(&path, page).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The code/meaning pairs of the exit-code table `--help` prints.
fn exit_code_table(help: &str) -> Vec<(String, String)> {
    help.lines()
        .skip_while(|line| !line.starts_with("Exit codes:"))
        .skip(1)
        .filter_map(|line| line.trim().split_once("  "))
        .map(|(code, meaning)| (code.to_string(), meaning.trim().to_string()))
        .collect()
}

/// Make text safe as a roff text line: no leading control character, literal backslashes and hyphens.
fn escape(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('-', "\\-");
    if text.starts_with('.') || text.starts_with('\'') { format!("\\&{text}") } else { text }
}

/// Sections of gitops(1) that clap does not know about.
const FILES_AND_ENVIRONMENT: &str = r#".SH FILES
.TP
.I /etc/gitops/gitops.env
KEY=VALUE settings read by every run (the service's EnvironmentFile=); \fB\-\-config\fR names another.
.TP
.I /var/lib/gitops/
State: \fIstate.json\fR, the run \fIlock\fR, \fIcache.git/\fR, \fIrevisions/<commit>/\fR, the \fIcurrent\fR symlink and \fIlogs/<commit>.log\fR.
.TP
.I /etc/systemd/system/gitops.service\fR, \fI/etc/systemd/system/gitops.timer
The units \fBgitops install\-units\fR writes; change them with drop\-ins (\fBsystemctl edit\fR).
.TP
.I /etc/credstore/gitops.NAME
Secrets passed to the service as systemd credentials: \fIssh\-key\fR, \fIhttp\-token\fR, \fIallowed\-signers\fR, \fInotify\-url\fR, \fInotify\-secret\fR.
.SH ENVIRONMENT
Every flag of \fBgitops sync\fR has a \fBGITOPS_*\fR variable (see \fBgitops\-sync\fR(1)); flags win over variables, variables over the env file.
.TP
.B STATE_DIRECTORY
Set by systemd's StateDirectory=; the default state directory.
.TP
.B CREDENTIALS_DIRECTORY
Set by systemd's LoadCredential=; gitops reads the credentials above from it when no flag or variable names a file.
.TP
.B RUST_LOG
Log filter, e.g. \fIdebug\fR or \fIgitops=trace\fR.
"#;

/// `gitops.bash`, `_gitops` (zsh) and `gitops.fish`.
fn completions(out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut cmd = Cli::command();
    [Shell::Bash, Shell::Zsh, Shell::Fish]
        .into_iter()
        .map(|shell| {
            clap_complete::generate_to(shell, &mut cmd, "gitops", out)
                .with_context(|| format!("writing the {shell} completions into {}", out.display()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::sync_exit_codes_help;

    #[test]
    fn exit_code_table_has_every_code() {
        let help = sync_exit_codes_help();
        let table = exit_code_table(&help);
        assert_eq!(table.len(), help.lines().count() - 1);
        for (code, meaning) in table {
            assert!(code.parse::<u8>().is_ok() && !meaning.is_empty(), "{code}");
        }
    }

    #[test]
    fn escape_guards_control_lines() {
        assert_eq!(escape(".x-y"), "\\&.x\\-y");
        assert_eq!(escape("a\\b"), "a\\eb");
    }
}
