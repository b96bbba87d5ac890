//! Build script: the `--version` line, `gitops 0.2.0 (abc1234, x86_64-linux-gnu glibc ≥ 2.17)`.
//!
//! The commit comes from `git rev-parse` when the crate is built from its own checkout, and is
//! `unknown` otherwise (a source tarball, or a checkout whose `.git` is missing). The glibc floor
//! is only known to the build that chose it: `packaging/dist.sh` links against glibc 2.17 with
//! cargo-zigbuild and says so in `GITOPS_BUILD_GLIBC`; a plain `cargo build` links against the
//! build machine's glibc, whose floor is whatever its symbols need, so it names none.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=GITOPS_BUILD_GLIBC");
    println!("cargo:rerun-if-env-changed=GITOPS_LINK_ORDER");
    link_order();

    let commit = commit(&manifest_dir).unwrap_or_else(|| "unknown".to_string());
    let env = |name: &str| std::env::var(name).unwrap_or_default();
    // x86_64-unknown-linux-gnu -> x86_64-linux-gnu, the name the release files carry.
    let mut build =
        format!("{}-{}-{}", env("CARGO_CFG_TARGET_ARCH"), env("CARGO_CFG_TARGET_OS"), env("CARGO_CFG_TARGET_ENV"));
    if let Ok(glibc) = std::env::var("GITOPS_BUILD_GLIBC")
        && !glibc.is_empty()
    {
        build.push_str(&format!(" glibc \u{2265} {glibc}"));
    }
    println!("cargo:rustc-env=GITOPS_VERSION={} ({commit}, {build})", env("CARGO_PKG_VERSION"));
}

/// Places the functions a no-op poll runs side by side (`packaging/link-order.py` writes the
/// linker script from a profile of one): the kernel maps a binary's text 64 KiB around each
/// page it touches, so a poll's resident memory is the number of windows its code is spread over.
fn link_order() {
    let Some(script) = std::env::var_os("GITOPS_LINK_ORDER").filter(|s| !s.is_empty()) else {
        return;
    };
    let script = PathBuf::from(script);
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-Wl,-T,{}", script.display());
}

/// The short commit of HEAD, if `dir` is the top of a Git work tree; watches the files that
/// change when HEAD moves, so a new commit rebuilds with the new id.
fn commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| -> Option<String> {
        let out = Command::new("git").args(args).current_dir(dir).output().ok()?;
        let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
        (out.status.success() && !text.is_empty()).then_some(text)
    };
    // A source tarball unpacked inside some other repository must not take that one's commit.
    let top = PathBuf::from(git(&["rev-parse", "--show-toplevel"])?);
    if top.canonicalize().ok()? != dir.canonicalize().ok()? {
        return None;
    }
    let mut watched = vec![dir.join(git(&["rev-parse", "--git-path", "HEAD"])?)];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        let loose = dir.join(git(&["rev-parse", "--git-path", &branch])?);
        if loose.exists() {
            watched.push(loose);
        } else {
            // Only in packed-refs: the next commit creates the file, which cargo notices in a
            // watched directory (not the whole of refs/heads: other branches' commits would
            // rebuild this one).
            watched.push(dir.join(git(&["rev-parse", "--git-path", "packed-refs"])?));
            watched.extend(loose.parent().map(Path::to_path_buf));
        }
    }
    for path in watched {
        // A path that does not exist would make cargo run this script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    git(&["rev-parse", "--short=7", "HEAD"])
}
