//! Secrets: `*.age` files in the repository, decrypted for the hosts they are for with real host keys
//! (ssh-keygen) and checked both ways against the real `age` CLI.

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::servers::Recorder;
use crate::support::*;

/// Exit code of a run stopped by a secret.
const SECRETS_FAILED: i32 = 32;

/// The entrypoint most tests use: record `path=content` for every file in the secrets directory, with modes.
const SHOW: &str = r#"echo "dir=${GITOPS_SECRETS_DIR:-none}" >> "$TEST_OUT"
if [ -n "$GITOPS_SECRETS_DIR" ]; then
  echo "mode=$(stat -c %a "$GITOPS_SECRETS_DIR")" >> "$TEST_OUT"
  cd "$GITOPS_SECRETS_DIR" && find . -type f | sort | while read -r f; do
    echo "$f=$(cat "$f") $(stat -c %a "$f")" >> "$TEST_OUT"
  done
fi"#;

fn needs() -> bool {
    tooling::available(&[tooling::AGE, tooling::SSH_KEYGEN])
}

/// A private directory on tmpfs to make the per-run secrets directories in (`--secrets-dir`).
/// A temp dir with this host's ed25519 key in it, when the tools are there (the one gate).
fn with_host_key() -> Option<(tempfile::TempDir, SigningKey)> {
    if !needs() {
        return None;
    }
    let dir = tempdir();
    let key = SigningKey::generate(dir.path(), "hostkey", "ed25519");
    Some((dir, key))
}

fn shm_base() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("gitops-secrets-test-").tempdir_in("/dev/shm").expect("a directory in /dev/shm")
}

/// An age X25519 identity made with age-keygen: (private key file, `age1…` recipient).
fn age_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    let status = tooling::command("age-keygen").arg("-o").arg(&path).stderr(Stdio::null()).status().unwrap();
    assert!(status.success(), "age-keygen");
    fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
    let text = fs::read_to_string(&path).unwrap();
    let recipient = text.lines().find_map(|l| l.strip_prefix("# public key: ")).expect("a public key line");
    (path, recipient.to_string())
}

/// `age -e` with `-R` public-key files and `-r` recipients, writing `out` in the working clone.
fn age_encrypt(remote: &Remote, out: &str, plaintext: &str, key_files: &[&Path], recipients: &[&str], armor: bool) {
    let mut cmd = tooling::command("age");
    cmd.arg("-e");
    for file in key_files {
        cmd.arg("-R").arg(file);
    }
    for recipient in recipients {
        cmd.arg("-r").arg(recipient);
    }
    if armor {
        cmd.arg("-a");
    }
    let path = remote.work.join(out);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut child = cmd.arg("-o").arg(&path).stdin(Stdio::piped()).spawn().unwrap();
    child.stdin.take().unwrap().write_all(plaintext.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "age -e {out}");
}

/// `age -d -i identity file`: the plaintext, or None when age cannot decrypt it.
fn age_decrypt(identity: &Path, file: &Path) -> Option<String> {
    let out = tooling::command("age").arg("-d").arg("-i").arg(identity).arg(file).output().unwrap();
    out.status.success().then(|| String::from_utf8(out.stdout).unwrap())
}

/// `gitops sync` as host `name` with its identity, secrets made in `base`.
fn sync_as(host: &Host, url: &str, name: &str, identity: &Path, base: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["sync", "--repo-url", url, "--state-dir", host.state.to_str().unwrap(), "--host", name];
    args.extend(["--age-identity", identity.to_str().unwrap(), "--secrets-dir", base.to_str().unwrap()]);
    args.extend_from_slice(extra);
    host.command(&args).output().expect("running gitops").into()
}

/// The per-run directories left in a base.
fn leftovers(base: &Path) -> Vec<String> {
    fs::read_dir(base).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
}

/// What the entrypoint saw, without the `dir=` line (its path changes every run).
fn seen(host: &Host) -> Vec<String> {
    host.out_lines().into_iter().filter(|l| !l.starts_with("dir=")).collect()
}

#[test]
fn three_hosts_sharing_one_repository_each_see_exactly_their_own_secrets_encrypted_by_the_age_cli() {
    if !needs() {
        return;
    }
    let dir = tempdir();
    let keys = dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let web1 = SigningKey::generate(&keys, "web1", "ed25519");
    let web2 = SigningKey::generate(&keys, "web2", "rsa");
    let (db1, db1_recipient) = age_keygen(&keys, "db1.agekey");
    let (web1_pub, web2_pub) = (web1.private.with_extension("pub"), web2.private.with_extension("pub"));

    let remote = Remote::new(dir.path());
    remote.script("run.sh", SHOW);
    age_encrypt(&remote, "hosts/web1/db.pass.age", "web1-only", &[&web1_pub], &[], false);
    age_encrypt(&remote, "hosts/web2/tls.key.age", "web2-only", &[&web2_pub], &[], true);
    age_encrypt(&remote, "hosts/db1/root.age", "db1-only", &[], &[&db1_recipient], false);
    age_encrypt(&remote, "shared/api-token.age", "web-fleet", &[&web1_pub, &web2_pub], &[], true);
    age_encrypt(&remote, "shared/all.age", "every-host", &[&web1_pub, &web2_pub], &[&db1_recipient], false);
    remote.write("shared/README", "not a secret\n");
    remote.commit("three hosts, one repository");

    let expected: [(&str, &Path, &[&str]); 3] = [
        (
            "web1",
            &web1.private,
            &["./hosts/web1/db.pass=web1-only 400", "./shared/all=every-host 400", "./shared/api-token=web-fleet 400"],
        ),
        (
            "web2",
            &web2.private,
            &["./hosts/web2/tls.key=web2-only 400", "./shared/all=every-host 400", "./shared/api-token=web-fleet 400"],
        ),
        ("db1", &db1, &["./hosts/db1/root=db1-only 400", "./shared/all=every-host 400"]),
    ];
    for (name, identity, files) in expected {
        let host_root = dir.path().join(name);
        fs::create_dir_all(&host_root).unwrap();
        let host = Host::new(&host_root, &remote.file_url());
        let base = shm_base();
        sync_as(&host, &remote.file_url(), name, identity, base.path(), &[]).expect(APPLIED);
        let mut want = vec!["mode=700".to_string()];
        want.extend(files.iter().map(|f| f.to_string()));
        assert_eq!(seen(&host), want, "{name} sees exactly its own secrets");
        assert!(leftovers(base.path()).is_empty(), "{name}: the secrets directory is removed after the run");
    }
}

#[test]
fn secrets_written_by_gitops_secrets_decrypt_with_the_age_cli_and_rekey_reports_the_change() {
    if !needs() {
        return;
    }
    let dir = tempdir();
    let keys = dir.path().join("keys");
    fs::create_dir_all(&keys).unwrap();
    let web1 = SigningKey::generate(&keys, "web1", "ed25519");
    let web2 = SigningKey::generate(&keys, "web2", "rsa");
    let db1 = SigningKey::generate(&keys, "db1", "ed25519");
    let (admin, admin_recipient) = age_keygen(&keys, "admin.agekey");
    let repo = dir.path().join("repo");
    for (name, key) in [("web1", &web1), ("web2", &web2), ("db1", &db1)] {
        let file = if name == "web2" { "ssh_host_rsa_key.pub" } else { "ssh_host_ed25519_key.pub" };
        fs::create_dir_all(repo.join("hosts").join(name)).unwrap();
        fs::copy(key.private.with_extension("pub"), repo.join("hosts").join(name).join(file)).unwrap();
    }
    fs::create_dir_all(repo.join(".gitops")).unwrap();
    let recipients = format!("admin {admin_recipient}\nhosts/web1/ web1\nshared/* web1 web2\n");
    fs::write(repo.join(".gitops/recipients"), &recipients).unwrap();
    fs::create_dir_all(repo.join("shared")).unwrap();
    fs::write(repo.join("hosts/web1/db.pass"), "web1-db-password\n").unwrap();
    fs::write(repo.join("shared/token"), "shared-api-token\n").unwrap();
    let gitops = |args: &[&str]| -> Run {
        Command::new(env!("CARGO_BIN_EXE_gitops"))
            .args(args)
            .current_dir(&repo)
            .env("GITOPS_CONFIG", "/dev/null")
            .env("EDITOR", "sh -c 'echo appended >> \"$1\"' sh")
            .env_remove("VISUAL")
            .output()
            .unwrap()
            .into()
    };

    let run = gitops(&["secrets", "encrypt", "hosts/web1/db.pass"]).expect(0);
    assert!(run.stdout.contains("wrote hosts/web1/db.pass.age for web1"), "{}", run.stdout);
    gitops(&["secrets", "encrypt", "--armor", "shared/token"]).expect(0);
    let (secret, shared) = (repo.join("hosts/web1/db.pass.age"), repo.join("shared/token.age"));
    assert!(fs::read_to_string(&shared).unwrap().starts_with("-----BEGIN AGE ENCRYPTED FILE-----"));
    assert_eq!(age_decrypt(&web1.private, &secret).as_deref(), Some("web1-db-password\n"));
    assert_eq!(age_decrypt(&admin, &secret).as_deref(), Some("web1-db-password\n"), "admins read everything");
    assert_eq!(age_decrypt(&web2.private, &secret), None, "web2 cannot read web1's secret");
    assert_eq!(age_decrypt(&web2.private, &shared).as_deref(), Some("shared-api-token\n"));
    assert_eq!(age_decrypt(&db1.private, &shared), None);
    gitops(&["secrets", "encrypt", "shared/token.age"]).expect(USAGE);
    fs::write(repo.join("unmatched"), "x").unwrap();
    let run = gitops(&["secrets", "encrypt", "unmatched"]).expect(USAGE);
    assert!(run.stderr.contains("no line in") && run.stderr.contains("unmatched.age"), "{}", run.stderr);

    let run = gitops(&["secrets", "list"]).expect(0);
    assert!(run.stdout.contains("hosts/web1/db.pass.age: web1, 1 age key\n"), "{}", run.stdout);
    assert!(run.stdout.contains("shared/token.age: web1, web2, 1 age key\n"), "{}", run.stdout);

    // db1 joins the shared secrets: list flags the file, rekey re-encrypts it and says who was added.
    fs::write(repo.join(".gitops/recipients"), recipients.replace("shared/* web1 web2", "shared/* web1 web2 db1"))
        .unwrap();
    let run = gitops(&["secrets", "list"]).expect(RUNTIME_ERROR);
    assert!(
        run.stdout.contains("shared/token.age: web1, web2, 1 age key [.gitops/recipients gives it to:"),
        "{}",
        run.stdout
    );
    let identity = admin.to_str().unwrap();
    let run = gitops(&["secrets", "rekey", "-i", identity]).expect(0);
    assert!(run.stdout.contains("shared/token.age: re-encrypted: +db1\n"), "{}", run.stdout);
    assert!(run.stdout.contains("hosts/web1/db.pass.age: re-encrypted, same recipients\n"), "{}", run.stdout);
    assert_eq!(age_decrypt(&db1.private, &shared).as_deref(), Some("shared-api-token\n"));
    assert!(fs::read_to_string(&shared).unwrap().starts_with("-----BEGIN AGE"), "an armored secret stays armored");
    gitops(&["secrets", "list"]).expect(0);

    // edit: the editor appends a line; the result is re-encrypted and the temporary plaintext is gone.
    let run = gitops(&["secrets", "edit", "-i", identity, "shared/token.age"]).expect(0);
    assert!(run.stdout.contains("wrote shared/token.age"), "{}", run.stdout);
    assert_eq!(age_decrypt(&web2.private, &shared).as_deref(), Some("shared-api-token\nappended\n"));
    let scratch: Vec<_> = fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with("gitops-edit.")
                && e.file_name().to_string_lossy().ends_with(".token")
        })
        .collect();
    assert!(scratch.is_empty(), "the temporary plaintext is removed");
    let run = gitops(&["secrets", "edit", "-i", web2.private.to_str().unwrap(), "hosts/web1/db.pass.age"]);
    assert_eq!(run.code, SECRETS_FAILED, "{}", run.stderr);
    assert!(run.stderr.contains("none of the given identities can decrypt it"), "{}", run.stderr);
}

/// A remote with SHOW as run.sh and one secret for `testhost` (encrypted to `key`), applied once by `host`.
fn applied_with_a_secret(dir: &Path, key: &SigningKey, base: &Path) -> (Remote, Host, String) {
    let remote = Remote::new(dir);
    remote.script("run.sh", SHOW);
    age_encrypt(
        &remote,
        "hosts/testhost/pass.age",
        "first-password",
        &[&key.private.with_extension("pub")],
        &[],
        false,
    );
    let first = remote.commit("a secret");
    let host = Host::new(dir, &remote.file_url());
    let identity = key.private.to_str().unwrap();
    host.sync(&["--age-identity", identity, "--secrets-dir", base.to_str().unwrap()]).expect(APPLIED);
    (remote, host, first)
}

#[test]
fn a_tampered_or_truncated_secret_stops_the_run_before_anything_is_applied_and_is_retried() {
    let Some((dir, key)) = with_host_key() else { return };
    let base = shm_base();
    let (remote, host, first) = applied_with_a_secret(dir.path(), &key, base.path());
    let flags = ["--age-identity", key.private.to_str().unwrap(), "--secrets-dir", base.path().to_str().unwrap()];
    let pub_key = key.private.with_extension("pub");

    for (what, damage) in [("tampered", 0usize), ("truncated", 1)] {
        age_encrypt(&remote, "shared/token.age", "second-password", &[&pub_key], &[], false);
        let path = remote.work.join("shared/token.age");
        let mut bytes = fs::read(&path).unwrap();
        if damage == 0 {
            let last = bytes.len() - 5;
            bytes[last] ^= 0x40;
        } else {
            bytes.truncate(bytes.len() - 20);
        }
        fs::write(&path, bytes).unwrap();
        remote.commit(what);
        let before = host.out_lines().len();
        let run = host.sync(&flags).expect(SECRETS_FAILED);
        let errors: Vec<&str> = run.stderr.lines().filter(|l| l.contains("ERROR")).collect();
        assert_eq!(errors.len(), 1, "one line: {}", run.stderr);
        assert!(errors[0].contains("secret shared/token.age: authentication failed"), "{}", run.stderr);
        assert_eq!(host.current().as_deref(), Some(first.as_str()), "{what}: the live revision is untouched");
        assert_eq!(host.applied().as_deref(), Some(first.as_str()));
        assert_eq!(host.out_lines().len(), before, "{what}: no entrypoint ran");
        assert!(leftovers(base.path()).is_empty());
    }
    // Not counted against --max-attempts: fixed, it applies on the next run.
    age_encrypt(&remote, "shared/token.age", "second-password", &[&pub_key], &[], false);
    let fixed = remote.commit("fixed");
    host.sync(&flags).expect(APPLIED);
    assert_eq!(host.applied(), Some(fixed));
}

/// Issue 21: a secret that `.gitops/recipients` grants to this host, and that this host cannot open, was
/// "skipped, for other hosts" and the commit applied without it. Now it stops the run (exit 32) and
/// nothing is applied; a secret the file grants only to others is still skipped.
#[test]
fn a_secret_granted_to_this_host_that_it_cannot_decrypt_stops_the_run() {
    let Some((dir, key)) = with_host_key() else { return };
    let other = SigningKey::generate(dir.path(), "other", "ed25519");
    let other_pub = other.private.with_extension("pub");
    let remote = Remote::new(dir.path());
    remote.script("run.sh", SHOW);
    remote.write(".gitops/recipients", "shared/db.age testhost other\nshared/other.age other\n");
    age_encrypt(&remote, "shared/other.age", "for-the-other-host-only", &[&other_pub], &[], false);
    remote.commit("a secret for another host");
    let host = Host::new(dir.path(), &remote.file_url());
    let base = shm_base();
    let flags = ["--age-identity", key.private.to_str().unwrap(), "--secrets-dir", base.path().to_str().unwrap()];
    host.sync(&flags).expect(APPLIED);
    let applied = host.applied();

    age_encrypt(&remote, "shared/db.age", "encrypted-without-testhost", &[&other_pub], &[], false);
    remote.commit("the database password, but testhost was left out when it was encrypted");
    let run = host.sync(&flags).expect(SECRETS_FAILED);
    assert!(
        run.stderr.contains(
            "secret shared/db.age: .gitops/recipients grants it to testhost, but it is not encrypted to this host's key"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(host.applied(), applied, "nothing applied");
    assert_eq!(host.out_lines().len(), 1, "the entrypoint did not run again");
}

#[test]
fn a_secret_in_the_hosts_own_directory_that_it_cannot_decrypt_stops_the_run() {
    let Some((dir, key)) = with_host_key() else { return };
    let other = SigningKey::generate(dir.path(), "other", "ed25519");
    let remote = Remote::new(dir.path());
    remote.script("run.sh", SHOW);
    age_encrypt(&remote, "hosts/other/pass.age", "not-ours", &[&other.private.with_extension("pub")], &[], false);
    age_encrypt(
        &remote,
        "hosts/testhost/pass.age",
        "encrypted-to-the-old-key",
        &[&other.private.with_extension("pub")],
        &[],
        false,
    );
    remote.commit("a secret for this host, encrypted to the wrong key");
    let host = Host::new(dir.path(), &remote.file_url());
    let base = shm_base();
    let identity = key.private.to_str().unwrap();
    let run = host.sync(&["--age-identity", identity, "--secrets-dir", base.path().to_str().unwrap()]);
    let run = run.expect(SECRETS_FAILED);
    assert!(
        run.stderr.contains(
            "secret hosts/testhost/pass.age: it is in this host's own directory, but it is not encrypted to this host's key"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(host.current(), None);
    assert!(host.out_lines().is_empty(), "nothing ran");
    assert!(!host.state.join("state.json").exists() || host.applied().is_none());
    // Without any identity (no --age-identity and no host key at the default path) it says what is missing.
    if !Path::new("/etc/ssh/ssh_host_ed25519_key").exists() {
        let run = host.sync(&["--secrets-dir", base.path().to_str().unwrap()]).expect(SECRETS_FAILED);
        assert!(run.stderr.contains("has no age identity"), "{}", run.stderr);
    }
}

#[test]
fn a_secret_echoed_by_the_entrypoint_appears_in_no_log_state_file_or_notification() {
    let Some((dir, key)) = with_host_key() else { return };
    let remote = Remote::new(dir.path());
    let (single, line1, line2) = ("pa55-w0rd-single", "multi-line-one", "multi-line-two");
    remote.script(
        "run.sh",
        r#"cat "$GITOPS_SECRETS_DIR/db.pass"; echo "token is $(cat "$GITOPS_SECRETS_DIR/cert.pem")" >&2
cat "$GITOPS_SECRETS_DIR/cert.pem"; exit 3"#,
    );
    let pub_key = key.private.with_extension("pub");
    age_encrypt(&remote, "db.pass.age", &format!("{single}\n"), &[&pub_key], &[], false);
    age_encrypt(&remote, "cert.pem.age", &format!("{line1}\n{line2}\n"), &[&pub_key], &[], true);
    remote.commit("secrets echoed");
    let json = Recorder::start();
    let discord = Recorder::start();
    let host = Host::new(dir.path(), &remote.file_url());
    let base = shm_base();
    let json_url = format!("json:{}", json.url("/hook"));
    let discord_url = format!("discord:{}", discord.url("/api/webhooks/1/x"));
    let metrics = dir.path().join("gitops.prom");
    let run = host
        .sync(&[
            "--age-identity",
            key.private.to_str().unwrap(),
            "--secrets-dir",
            base.path().to_str().unwrap(),
            "--notify",
            &json_url,
            "--notify",
            &discord_url,
            "--metrics-file",
            metrics.to_str().unwrap(),
        ])
        .expect(APPLY_FAILED);

    let mut haystacks: Vec<(String, Vec<u8>)> =
        vec![("stdout".into(), run.stdout.into_bytes()), ("stderr".into(), run.stderr.clone().into_bytes())];
    let mut stack = vec![host.state.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                stack.push(entry.path());
            } else if kind.is_file() {
                haystacks.push((entry.path().display().to_string(), fs::read(entry.path()).unwrap()));
            }
        }
    }
    haystacks.push(("metrics".into(), fs::read(&metrics).unwrap()));
    let requests: Vec<_> = json.requests().into_iter().chain(discord.requests()).collect();
    assert_eq!(requests.len(), 2, "both notifications went out");
    haystacks.extend(requests.into_iter().map(|r| (format!("notification {}", r.path), r.body)));
    for (what, bytes) in &haystacks {
        for secret in [single, line1, line2] {
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "{secret} leaked into {what}:\n{}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    let log = fs::read_to_string(host.state.join("logs").join(format!("{}.log", remote.head()))).unwrap();
    assert!(log.contains("***\ntoken is ***\n***\n***\n"), "the output is there, redacted:\n{log}");
    assert!(run.stderr.contains("token is ***"), "{}", run.stderr);
}

#[test]
fn the_secrets_directory_is_gone_after_a_timeout_and_after_gitops_is_killed() {
    let Some((dir, key)) = with_host_key() else { return };
    let remote = Remote::new(dir.path());
    // The first run hangs (until killed), the second one times out, the third one finishes.
    remote.script(
        "run.sh",
        r#"n=$(cat "$TEST_OUT.n" 2>/dev/null || echo 0); echo $((n + 1)) > "$TEST_OUT.n"
echo "$GITOPS_SECRETS_DIR" > "$TEST_OUT.dir"
[ "$n" -lt 2 ] && exec sleep 60
echo done >> "$TEST_OUT""#,
    );
    age_encrypt(&remote, "pass.age", "kill-me-password", &[&key.private.with_extension("pub")], &[], false);
    remote.commit("slow");
    let host = Host::new(dir.path(), &remote.file_url());
    let base = shm_base();
    let state = host.state.to_str().unwrap().to_string();
    let identity = key.private.to_str().unwrap().to_string();
    let base_arg = base.path().to_str().unwrap().to_string();
    let url = remote.file_url();
    let args = ["sync", "--repo-url", &url, "--state-dir", &state, "--host", "testhost", "--age-identity", &identity];
    let mut child = host.command(&args).args(["--secrets-dir", &base_arg]).stderr(Stdio::null()).spawn().unwrap();
    let dir_file = PathBuf::from(format!("{}.dir", host.out.display()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir_file.exists() {
        assert!(Instant::now() < deadline, "the entrypoint did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let secrets_dir = PathBuf::from(fs::read_to_string(&dir_file).unwrap().trim());
    child.kill().unwrap();
    child.wait().unwrap();
    // Killed: the directory stays until the next run, but nobody else can read it.
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&secrets_dir), 0o700);
    assert_eq!(mode(&secrets_dir.join("pass")), 0o400);

    let run = host.sync(&["--age-identity", &identity, "--secrets-dir", &base_arg, "--apply-timeout", "1s"]);
    let run = run.expect(APPLY_FAILED);
    assert!(run.stderr.contains("left by a run that was killed"), "{}", run.stderr);
    assert!(!secrets_dir.exists(), "the next run removed the killed run's secrets");
    assert!(run.stderr.contains("timed out"), "{}", run.stderr);
    assert!(leftovers(base.path()).is_empty(), "a timed-out entrypoint's secrets are removed too");

    host.sync(&["--age-identity", &identity, "--secrets-dir", &base_arg]).expect(APPLIED);
    assert_eq!(host.out_lines(), ["done"]);
    assert!(leftovers(base.path()).is_empty());
    assert!(!host.state.join("secrets.dirs").exists());
}

#[test]
fn secrets_are_refused_off_tmpfs_unless_the_directory_is_named_with_secrets_dir() {
    let Some((dir, key)) = with_host_key() else { return };
    let remote = Remote::new(dir.path());
    remote.script("run.sh", SHOW);
    age_encrypt(&remote, "pass.age", "disk-password", &[&key.private.with_extension("pub")], &[], false);
    remote.commit("a secret");
    // The target directory is on disk on every machine these tests run on (/dev/shm is the tmpfs).
    let on_disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let runtime = on_disk.path().join("runtime");
    let host = Host::new(dir.path(), &remote.file_url()).env("RUNTIME_DIRECTORY", runtime.to_str().unwrap());
    let identity = key.private.to_str().unwrap();
    let run = host.sync(&["--age-identity", identity]).expect(SECRETS_FAILED);
    assert!(
        run.stderr.contains(&format!("secrets directory {} is not on tmpfs", runtime.display()))
            && run.stderr.contains("--secrets-dir"),
        "{}",
        run.stderr
    );
    assert_eq!(host.current(), None, "nothing was published");
    assert!(host.out_lines().is_empty());
    // Named explicitly, it is the operator's choice.
    host.sync(&["--age-identity", identity, "--secrets-dir", runtime.to_str().unwrap()]).expect(APPLIED);
    assert_eq!(seen(&host), ["mode=700", "./pass=disk-password 400"]);
    assert!(leftovers(&runtime).is_empty());
}

#[test]
fn dry_run_lists_the_secrets_it_would_decrypt_and_skip_by_name_only() {
    let Some((dir, key)) = with_host_key() else { return };
    let other = SigningKey::generate(dir.path(), "other", "ed25519");
    let remote = Remote::new(dir.path());
    remote.script("run.sh", SHOW);
    age_encrypt(
        &remote,
        "hosts/testhost/mine.age",
        "dry-mine-value",
        &[&key.private.with_extension("pub")],
        &[],
        false,
    );
    age_encrypt(
        &remote,
        "hosts/other/theirs.age",
        "dry-theirs-value",
        &[&other.private.with_extension("pub")],
        &[],
        false,
    );
    remote.commit("secrets");
    let host = Host::new(dir.path(), &remote.file_url());
    let base = shm_base();
    let flags =
        ["--dry-run", "--age-identity", key.private.to_str().unwrap(), "--secrets-dir", base.path().to_str().unwrap()];
    let run = host.sync(&flags).expect(APPLIED);
    assert!(
        run.stdout.contains("secrets to decrypt (1):\n  hosts/testhost/mine\nsecrets skipped, for other hosts (1):\n  hosts/other/theirs.age\n"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("dry-mine-value") && !run.stderr.contains("dry-mine-value"));
    assert!(host.out_lines().is_empty() && leftovers(base.path()).is_empty());
}

#[test]
fn the_outgoing_revisions_teardown_gets_its_own_secrets_and_the_new_entrypoint_the_new_ones() {
    let Some((dir, key)) = with_host_key() else { return };
    let pub_key = key.private.with_extension("pub");
    let remote = Remote::new(dir.path());
    remote.script("run.sh", r#"echo "run $(cat "$GITOPS_SECRETS_DIR/pass")" >> "$TEST_OUT""#);
    remote.script("teardown.sh", r#"echo "teardown $(cat "$GITOPS_SECRETS_DIR/pass")" >> "$TEST_OUT""#);
    age_encrypt(&remote, "pass.age", "old-value", &[&pub_key], &[], false);
    remote.commit("old");
    let host = Host::new(dir.path(), &remote.file_url());
    let base = shm_base();
    let flags = ["--age-identity", key.private.to_str().unwrap(), "--secrets-dir", base.path().to_str().unwrap()];
    host.sync(&flags).expect(APPLIED);
    age_encrypt(&remote, "pass.age", "new-value", &[&pub_key], &[], false);
    remote.commit("rotated");
    host.sync(&flags).expect(APPLIED);
    assert_eq!(host.out_lines(), ["run old-value", "teardown old-value", "run new-value"]);
    assert!(leftovers(base.path()).is_empty());
}
