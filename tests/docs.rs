//! Man pages and completions made by `gitops generate`: they render with the real `man`, and
//! name every subcommand and flag `--help` knows.

use std::path::Path;
use std::process::{Command, Output};

use crate::support::tooling;

fn gitops(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_gitops"))
        .args(args)
        .env("GITOPS_CONFIG", "/dev/null")
        .env_remove("RUST_LOG")
        .output()
        .expect("running gitops");
    assert!(out.status.success(), "gitops {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out
}

/// The long flags (`--name`) a `--help` text defines: the first `--word` of each option line
/// (`  -v, --verbose...`, `      --repo-url <URL>`), not flags quoted in descriptions.
fn long_flags(help: &str) -> Vec<String> {
    let mut flags: Vec<String> = help
        .lines()
        // Options are indented by 2 (`-v, --verbose`) or 6 (`--repo-url`); descriptions by 10.
        .filter(|line| line.trim_start().starts_with('-') && (2..=6).contains(&(line.len() - line.trim_start().len())))
        .filter_map(|line| {
            line.split(|c: char| c.is_whitespace() || c == ',' || c == '=').find(|w| w.starts_with("--") && w.len() > 2)
        })
        .map(|w| w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric()).to_string())
        .collect();
    flags.sort();
    flags.dedup();
    flags
}

/// The visible subcommands listed by `gitops --help`.
fn subcommands() -> Vec<String> {
    let help = String::from_utf8(gitops(&["--help"]).stdout).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("    "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(String::from)
        .collect()
}

/// A page as `man` shows it: plain ASCII, no hyphenation, no justification, one long line per paragraph.
fn render(page: &Path) -> String {
    let out = tooling::command("man")
        .args(["--warnings", "--nh", "--nj", "-l"])
        .arg(page)
        .env("LC_ALL", "C")
        .env("MANWIDTH", "250")
        .env("MAN_KEEP_FORMATTING", "")
        .output()
        .expect("running man");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "man -l {} complained: {stderr}", page.display());
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn man_pages_render_and_document_every_subcommand_and_flag() {
    if !tooling::available(&[tooling::MAN]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    gitops(&["generate", "man", "--out", dir.path().to_str().unwrap()]);

    let main = render(&dir.path().join("gitops.1"));
    let subs = subcommands();
    assert!(subs.contains(&"sync".to_string()), "{subs:?}");
    for sub in &subs {
        assert!(main.contains(&format!("gitops-{sub}(1)")), "gitops.1 lists {sub}:\n{main}");
        let page = render(&dir.path().join(format!("gitops-{sub}.1")));
        let help = String::from_utf8(gitops(&[sub, "--help"]).stdout).unwrap();
        let flags = long_flags(&help);
        assert!(flags.contains(&"--config".to_string()), "flags found in --help: {flags:?}");
        for flag in flags {
            assert!(page.contains(&flag), "gitops-{sub}.1 documents {flag}:\n{page}");
        }
    }
    for flag in long_flags(&String::from_utf8(gitops(&["--help"]).stdout).unwrap()) {
        assert!(main.contains(&flag), "gitops.1 documents {flag}");
    }
    let sync = render(&dir.path().join("gitops-sync.1"));
    assert!(sync.contains("EXIT STATUS") && sync.contains("GITOPS_REPO_URL"), "{sync}");
    // Hidden plumbing gets no page.
    assert!(!dir.path().join("gitops-generate.1").exists());
}

#[test]
fn completions_cover_every_subcommand_and_sync_flag() {
    let dir = tempfile::tempdir().unwrap();
    gitops(&["generate", "completions", "--out", dir.path().to_str().unwrap()]);
    let sync_flags = long_flags(&String::from_utf8(gitops(&["sync", "--help"]).stdout).unwrap());
    assert!(sync_flags.len() >= 15, "{sync_flags:?}");
    for file in ["gitops.bash", "_gitops", "gitops.fish"] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        for sub in subcommands() {
            assert!(text.contains(&sub), "{file} completes {sub}");
        }
        for flag in &sync_flags {
            // fish writes `-l repo-url` rather than `--repo-url`.
            assert!(
                text.contains(flag.as_str()) || text.contains(&format!("-l {}", &flag[2..])),
                "{file} completes {flag}"
            );
        }
    }
    let bash = Command::new("bash").arg("-n").arg(dir.path().join("gitops.bash")).output().unwrap();
    assert!(bash.status.success(), "{}", String::from_utf8_lossy(&bash.stderr));
}

/// `(code, meaning)` rows of the "Exit codes:" table a `--help` prints.
fn help_exit_codes(help: &str) -> Vec<(String, String)> {
    help.lines()
        .skip_while(|l| !l.starts_with("Exit codes:"))
        .skip(1)
        .filter_map(|l| l.trim().split_once("  "))
        .map(|(code, meaning)| (code.to_string(), meaning.trim().to_string()))
        .collect()
}

/// The `(code, meaning)` rows of the README's exit-code table in the section `heading` (the first table
/// headed `| code | meaning |` there).
fn readme_exit_codes(heading: &str) -> Vec<(String, String)> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    readme
        .lines()
        .skip_while(|l| *l != heading)
        .skip_while(|l| *l != "| code | meaning |")
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .filter_map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split('|').map(str::trim).collect();
            Some((cells.first()?.to_string(), cells.get(1)?.to_string()))
        })
        .collect()
}

/// `(code, meaning)` rows of an exit-code table.
type Rows = Vec<(String, String)>;

/// The EXIT STATUS rows of each generated man page in `pages` (with the page and its text); None
/// (skipped) without `man`.
fn man_exit_codes(pages: &[&str]) -> Option<Vec<(String, Rows, String)>> {
    if !tooling::available(&[tooling::MAN]) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    gitops(&["generate", "man", "--out", dir.path().to_str().unwrap()]);
    let rows = pages.iter().map(|page| {
        let text = render(&dir.path().join(page));
        let rows = text
            .lines()
            .skip_while(|l| l.trim() != "EXIT STATUS")
            .skip(1)
            .take_while(|l| l.is_empty() || l.starts_with(' '))
            .filter_map(|l| l.trim().split_once(char::is_whitespace))
            .map(|(code, meaning)| (code.to_string(), meaning.trim().to_string()))
            .collect();
        (page.to_string(), rows, text)
    });
    Some(rows.collect())
}

/// One command's exit-code table: its `--help` prints it from the `Outcome` enum (labels included), and
/// the README section and its man pages carry the same rows, in the same order, word for word.
fn exit_codes_agree(command: &[&str], codes: &[&str], heading: &str, pages: &[&str]) {
    let help_args: Vec<&str> = command.iter().copied().chain(["--help"]).collect();
    let help = help_exit_codes(&String::from_utf8(gitops(&help_args).stdout).unwrap());
    let listed: Vec<&str> = help.iter().map(|(code, _)| code.as_str()).collect();
    assert_eq!(listed, codes, "{help:?}");
    assert_eq!(
        readme_exit_codes(heading),
        help,
        "README's table under {heading} differs from `gitops {command:?} --help`"
    );
    for (page, rows, text) in man_exit_codes(pages).unwrap_or_default() {
        assert_eq!(rows, help, "{page}'s EXIT STATUS differs from `gitops {command:?} --help`:\n{text}");
    }
}

/// The exit-code contract of `gitops sync`, also printed by plain `gitops --help`.
#[test]
fn exit_code_table_is_the_same_in_help_readme_and_man_page() {
    let codes = ["0", "10", "11", "20", "21", "30", "31", "32", "33", "34", "1", "2", "75"];
    exit_codes_agree(&["sync"], &codes, "### Exit codes", &["gitops.1", "gitops-sync.1"]);
    let sync = help_exit_codes(&String::from_utf8(gitops(&["sync", "--help"]).stdout).unwrap());
    assert_eq!(sync, help_exit_codes(&String::from_utf8(gitops(&["--help"]).stdout).unwrap()));
}

/// `gitops fleet` has its own codes (rolling out, unsettled, no host matched).
#[test]
fn fleet_exit_codes_are_the_same_in_help_readme_and_man_page() {
    exit_codes_agree(&["fleet"], &["0", "4", "3", "5", "1", "2"], "### `gitops fleet`", &["gitops-fleet.1"]);
}

/// `gitops check`: clean, findings, usage.
#[test]
fn check_exit_codes_are_the_same_in_help_readme_and_man_page() {
    exit_codes_agree(&["check"], &["0", "1", "2"], "## Check before you push", &["gitops-check.1"]);
}

/// The notification's `result` can be any run result but `locked`: the README lists every one.
#[test]
fn the_notification_result_list_names_every_reported_result() {
    let help = help_exit_codes(&String::from_utf8(gitops(&["sync", "--help"]).stdout).unwrap());
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme.find("`result` is one of").expect("the README lists the notification results");
    let sentence = &readme[start..start + readme[start..].find(". Fields").unwrap()];
    for (_, meaning) in help {
        let label = meaning.split(':').next().unwrap();
        assert_eq!(sentence.contains(&format!("`{label}`")), label != "locked", "{label} in: {sentence}");
    }
}
