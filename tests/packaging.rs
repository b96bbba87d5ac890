//! The package metadata in Cargo.toml (cargo-deb and cargo-generate-rpm): every asset exists
//! or is made by `just dist`, and both packages carry every unit, man page and completion.
//! (The .deb itself is built, installed with dpkg and booted in tests/e2e_systemd.rs; the release
//! files `just dist` makes are checked in tests/dist.rs.)

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::tooling;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// `[package.metadata]` of this crate, as cargo reads it.
fn metadata() -> Value {
    let out = Command::new(env!("CARGO"))
        .args(["metadata", "--no-deps", "--format-version", "1", "--offline"])
        .current_dir(MANIFEST_DIR)
        .output()
        .expect("running cargo metadata");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    all["packages"][0]["metadata"].clone()
}

/// What `gitops generate` writes, by file name, for the `target/assets/<dir>` it goes to.
fn generated(what: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_gitops")).args(["generate", what, "--out"]).arg(dir.path()).output().unwrap();
    assert!(out.status.success());
    let mut names: Vec<String> =
        std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// The files a source pattern stands for: repository files, the release binary, or generated assets.
fn expand(source: &str) -> Vec<String> {
    if source == "target/release/gitops" {
        return vec![source.into()];
    }
    for (dir, what) in [("target/assets/man/", "man"), ("target/assets/completions/", "completions")] {
        if let Some(pattern) = source.strip_prefix(dir) {
            let matches: Vec<String> = generated(what)
                .into_iter()
                .filter(|name| match pattern.strip_prefix('*') {
                    Some(suffix) => name.ends_with(suffix),
                    None => name == pattern,
                })
                .map(|name| format!("{dir}{name}"))
                .collect();
            assert!(!matches.is_empty(), "{source} matches nothing gitops generates");
            return matches;
        }
    }
    assert!(Path::new(MANIFEST_DIR).join(source).is_file(), "asset {source} does not exist");
    vec![source.into()]
}

/// (source, installed path, mode) of the .deb's assets, with the systemd units cargo-deb adds.
fn deb_assets(deb: &Value) -> Vec<(String, String, String)> {
    let mut assets = Vec::new();
    for asset in deb["assets"].as_array().unwrap() {
        let [source, dest, mode] = [0, 1, 2].map(|i| asset[i].as_str().unwrap().to_string());
        for file in expand(&source) {
            let name = Path::new(&file).file_name().unwrap().to_string_lossy().into_owned();
            let dest = if dest.ends_with('/') { format!("/{dest}{name}") } else { format!("/{dest}") };
            assets.push((file, dest, mode.clone()));
        }
    }
    // cargo-deb's systemd-units: systemd/<unit-name>.<type>.
    let unit_dir = deb["systemd-units"]["unit-scripts"].as_str().unwrap();
    let unit_name = deb["systemd-units"]["unit-name"].as_str().unwrap();
    for unit in units().into_iter().filter(|u| u.starts_with(&format!("{unit_name}."))) {
        assets.push((format!("{unit_dir}{unit}"), format!("/usr/lib/systemd/system/{unit}"), "644".into()));
    }
    assets
}

/// (source, installed path, mode) of the .rpm's assets.
fn rpm_assets(rpm: &Value) -> Vec<(String, String, String)> {
    let mut assets = Vec::new();
    for asset in rpm["assets"].as_array().unwrap() {
        let [source, dest, mode] = ["source", "dest", "mode"].map(|k| asset[k].as_str().unwrap().to_string());
        for file in expand(&source) {
            let name = Path::new(&file).file_name().unwrap().to_string_lossy().into_owned();
            let dest = if dest.ends_with('/') { format!("{dest}{name}") } else { dest.clone() };
            assets.push((file, dest, mode.clone()));
        }
    }
    assets
}

fn units() -> Vec<String> {
    let mut units: Vec<String> = std::fs::read_dir(Path::new(MANIFEST_DIR).join("systemd"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    units.sort();
    units
}

#[test]
fn deb_and_rpm_ship_the_same_files_and_every_asset_exists() {
    let meta = metadata();
    let deb = deb_assets(&meta["deb"]);
    let rpm = rpm_assets(&meta["generate-rpm"]);

    for assets in [&deb, &rpm] {
        let sources: BTreeSet<&str> = assets.iter().map(|a| a.0.as_str()).collect();
        for unit in units() {
            assert!(sources.contains(format!("systemd/{unit}").as_str()), "{unit}");
        }
        for name in generated("man") {
            assert!(sources.contains(format!("target/assets/man/{name}").as_str()), "{name}");
        }
        for name in generated("completions") {
            assert!(sources.contains(format!("target/assets/completions/{name}").as_str()), "{name}");
        }
        let find = |dest: &str| assets.iter().find(|a| a.1 == dest);
        assert_eq!(find("/usr/bin/gitops").map(|a| a.2.as_str()), Some("755"));
        // The env file may come to hold settings worth hiding: root-only, as the kickstart writes it.
        assert_eq!(find("/etc/gitops/gitops.env").map(|a| a.2.as_str()), Some("600"));
        assert!(find("/usr/lib/systemd/system/gitops.service").is_some());
        for license in ["LICENSE-MIT", "LICENSE-APACHE"] {
            assert!(sources.contains(license), "{license} is not shipped");
        }
    }
    // The .deb and .rpm differ only in where zsh looks for vendor completions, the docs and licenses.
    let dests = |assets: &[(String, String, String)]| -> BTreeSet<String> {
        assets
            .iter()
            .map(|a| a.1.replace("/usr/share/zsh/site-functions/", "/usr/share/zsh/vendor-completions/"))
            .filter(|d| !d.starts_with("/usr/share/doc/") && !d.starts_with("/usr/share/licenses/"))
            .collect()
    };
    assert_eq!(dests(&deb), dests(&rpm));

    // The env file is a configuration file in both: upgrades keep the operator's edits.
    assert_eq!(meta["deb"]["conf-files"], serde_json::json!(["/etc/gitops/gitops.env"]));
    let rpm_env = meta["generate-rpm"]["assets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["dest"] == "/etc/gitops/gitops.env")
        .unwrap();
    assert_eq!(rpm_env["config"], "noreplace");
    // Upgrades never stop or restart a sync in progress (it may be the one upgrading gitops).
    let units = &meta["deb"]["systemd-units"];
    assert_eq!(units["enable"], false);
    assert_eq!(units["stop-on-upgrade"], false);
    assert_eq!(units["restart-after-upgrade"], false);
    assert_eq!(meta["generate-rpm"]["requires"]["git-core"], "*");
}

#[test]
fn just_dist_generates_the_assets_the_packages_use() {
    let justfile = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("justfile")).unwrap();
    assert!(justfile.contains("\ndist:\n    packaging/dist.sh\n"), "just dist runs packaging/dist.sh");
    assert!(justfile.contains("\nalias package := dist\n"), "just package is just dist");
    let script = std::fs::read_to_string(Path::new(MANIFEST_DIR).join("packaging/dist.sh")).unwrap();
    for step in [
        // The shipped binary has no `generate`: the packages ship what it writes instead.
        "cargo zigbuild --quiet --locked --release --no-default-features --target \"$triple.$glibc\"",
        "\"$generator\" -q generate man --out target/assets/man",
        "\"$generator\" -q generate completions --out target/assets/completions",
        // Already stripped, so the three files carry one binary.
        "cargo deb --quiet --no-build --no-strip --target \"$triple\"",
        "cargo generate-rpm --target \"$triple\"",
        "sha256sum",
    ] {
        assert!(script.contains(step), "packaging/dist.sh runs {step:?}");
    }
}

/// The newest glibc symbol version a binary built on this machine (Debian 12) needs, as README's
/// "Where it runs" says of plain `cargo build` binaries. (The release is linked against 2.17 by
/// packaging/dist.sh: tests/dist.rs.)
const GLIBC_PIN: &str = "2.34";

#[test]
fn binary_needs_exactly_the_pinned_glibc() {
    if !tooling::available(&[tooling::OBJDUMP]) {
        return;
    }
    let out =
        tooling::command("objdump").arg("-T").arg(env!("CARGO_BIN_EXE_gitops")).output().expect("running objdump");
    assert!(out.status.success(), "objdump -T: {}", String::from_utf8_lossy(&out.stderr));
    let symbols = String::from_utf8_lossy(&out.stdout);
    let version = |text: &str| text.split('.').map(|n| n.parse::<u32>().ok()).collect::<Option<Vec<u32>>>();
    let newest = symbols
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
        .filter_map(|word| word.strip_prefix("GLIBC_"))
        .filter_map(|v| Some((version(v)?, v)))
        .max()
        .map(|(_, v)| v)
        .expect("the binary links glibc symbols");
    assert_eq!(
        newest, GLIBC_PIN,
        "a binary built here now needs GLIBC_{newest} (was {GLIBC_PIN}): README's 'Where it runs' section must change too"
    );
}
