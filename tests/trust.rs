//! Zero-trust: signed commits against allowed_signers, rollback guard, host keys, secrets never leaking.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use crate::support::servers::{HttpGit, Sshd, TlsProxy};
use crate::support::*;

/// A signed repository: one signed commit with run.sh, and a host with a signers file naming `keys`.
struct Fixture {
    dir: tempfile::TempDir,
    remote: Remote,
    signers: std::path::PathBuf,
}

impl Fixture {
    fn new(signer: &SigningKey, allowed: &[String]) -> Fixture {
        let dir = tempdir();
        let remote = Remote::new(dir.path());
        remote.script("run.sh", RECORD);
        remote.commit_signed("initial", signer);
        let signers = allowed_signers(dir.path(), allowed);
        Fixture { dir, remote, signers }
    }

    fn host(&self) -> Host {
        Host::new(self.dir.path(), &self.remote.file_url())
    }

    fn sync(&self, host: &Host, extra: &[&str]) -> Run {
        let mut args = vec!["--allowed-signers", self.signers.to_str().unwrap()];
        args.extend_from_slice(extra);
        host.sync(&args)
    }
}

/// A directory for signing keys; None (the test is skipped) without ssh-keygen to make them.
fn keys_dir() -> Option<tempfile::TempDir> {
    tooling::available(&[tooling::SSH_KEYGEN]).then(tempdir)
}

/// What `git verify-commit` says with the same allowed_signers file: our verdicts must agree with git's.
fn git_verifies(repo: &Path, signers: &Path, rev: &str) -> bool {
    Command::new("git")
        .current_dir(repo)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .args(["-c", &format!("gpg.ssh.allowedSignersFile={}", signers.display()), "verify-commit", rev])
        .output()
        .unwrap()
        .status
        .success()
}

#[test]
fn chain_signed_by_ed25519_ecdsa_and_rsa_keys_applies() {
    let Some(keys) = keys_dir() else { return };
    let ed = SigningKey::generate(keys.path(), "ed", "ed25519");
    let ec = SigningKey::generate(keys.path(), "ec", "ecdsa");
    let rsa = SigningKey::generate(keys.path(), "rsa", "rsa");
    let f = Fixture::new(&ed, &[ed.allowed("alice@example.com", ""), ec.allowed("bob", ""), rsa.allowed("carol", "")]);
    let host = f.host();
    f.sync(&host, &[]).expect(APPLIED);

    f.remote.write("a", "1");
    f.remote.commit_signed("by ecdsa", &ec);
    f.remote.write("b", "2");
    let head = f.remote.commit_signed("by rsa", &rsa);
    assert!(git_verifies(&f.remote.work, &f.signers, "HEAD"));
    f.sync(&host, &[]).expect(APPLIED);

    assert_eq!(host.applied(), Some(head.clone()));
    let record = &host.state_json()["verification"];
    assert_eq!(record["result"], "verified");
    assert_eq!(record["commit"], head.as_str());
    assert_eq!(record["principal"], "carol");
    assert_eq!(record["fingerprint"], rsa.fingerprint().as_str());
    assert_eq!(record["commits_checked"], 2);
}

#[test]
fn one_unsigned_commit_in_the_middle_is_refused_under_all() {
    let Some(keys) = keys_dir() else { return };
    let key = SigningKey::generate(keys.path(), "ed", "ed25519");
    let f = Fixture::new(&key, &[key.allowed("alice", "")]);
    let host = f.host();
    f.sync(&host, &[]).expect(APPLIED);
    let good = f.remote.head();
    f.remote.write("a", "1");
    f.remote.commit_signed("signed 1", &key);
    f.remote.write("b", "evil");
    let unsigned = f.remote.commit("sneaked in, unsigned");
    f.remote.write("c", "3");
    let head = f.remote.commit_signed("signed 3", &key);
    let before = host.snapshot();

    let run = f.sync(&host, &[]).expect(VERIFY_FAILED);

    assert!(run.stderr.contains(&unsigned), "names the offending commit: {}", run.stderr);
    assert!(run.stderr.contains("not signed"), "{}", run.stderr);
    assert_eq!(host.current(), Some(good.clone()), "the previous revision stays live");
    assert!(!host.state.join("revisions").join(&head).exists(), "nothing checked out");
    assert_eq!(host.out_lines().len(), 1, "nothing applied");
    let record = &host.state_json()["verification"];
    assert_eq!(record["result"], "rejected");
    assert_eq!(record["object"], unsigned.as_str());
    assert_eq!(record["commit"], head.as_str());
    assert!(record["reason"].as_str().unwrap().contains("not signed"));
    // Only state.json records the refusal.
    let after = host.snapshot();
    let changed: Vec<_> = after.iter().filter(|e| !before.contains(e)).map(|e| e.0.clone()).collect();
    assert_eq!(changed, [std::path::PathBuf::from("state.json")]);

    // Every run refuses it again; `--verify head` only looks at the tip, which is signed.
    f.sync(&host, &[]).expect(VERIFY_FAILED);
    f.sync(&host, &["--verify", "head"]).expect(APPLIED);
    assert_eq!(host.applied(), Some(head));
}

#[test]
fn signature_by_a_key_not_in_the_file_is_refused_with_its_fingerprint() {
    let Some(keys) = keys_dir() else { return };
    let allowed = SigningKey::generate(keys.path(), "allowed", "ed25519");
    let stranger = SigningKey::generate(keys.path(), "stranger", "ed25519");
    let f = Fixture::new(&allowed, &[allowed.allowed("alice", "")]);
    let host = f.host();
    f.sync(&host, &[]).expect(APPLIED);
    f.remote.write("x", "1");
    let commit = f.remote.commit_signed("by a stranger", &stranger);
    assert!(!git_verifies(&f.remote.work, &f.signers, "HEAD"));

    let run = f.sync(&host, &[]).expect(VERIFY_FAILED);

    assert!(run.stderr.contains("not in the allowed signers file"), "{}", run.stderr);
    let record = &host.state_json()["verification"];
    assert_eq!(record["object"], commit.as_str());
    assert_eq!(record["fingerprint"], stranger.fingerprint().as_str());
}

#[test]
fn tampered_commit_with_the_old_signature_is_refused() {
    let Some(keys) = keys_dir() else { return };
    let key = SigningKey::generate(keys.path(), "ed", "ed25519");
    let f = Fixture::new(&key, &[key.allowed("alice", "")]);
    let host = f.host();
    f.sync(&host, &[]).expect(APPLIED);
    f.remote.write("x", "1");
    let signed = f.remote.commit_signed("deploy 1 replica", &key);
    // Re-write the signed object with another message, keeping the signature: the payload changed.
    let raw = git(&f.remote.work, &["cat-file", "commit", &signed]);
    let forged = raw.replace("deploy 1 replica", "deploy 9 replicas");
    let path = f.dir.path().join("forged");
    fs::write(&path, format!("{forged}\n")).unwrap();
    let tampered = git(&f.remote.work, &["hash-object", "-t", "commit", "-w", path.to_str().unwrap()]);
    git(&f.remote.work, &["reset", "-q", "--hard", &tampered]);
    git(&f.remote.work, &["push", "-q", "--force", "origin", "main"]);
    assert!(!git_verifies(&f.remote.work, &f.signers, &tampered), "git agrees it is forged");

    let run = f.sync(&host, &[]).expect(VERIFY_FAILED);

    assert!(run.stderr.contains("does not match"), "{}", run.stderr);
    assert_eq!(host.state_json()["verification"]["object"], tampered.as_str());
}

#[test]
fn signer_allowed_only_for_another_namespace_is_refused() {
    let Some(keys) = keys_dir() else { return };
    let key = SigningKey::generate(keys.path(), "ed", "ed25519");
    let f = Fixture::new(&key, &[key.allowed("alice", "namespaces=\"file\"")]);
    assert!(!git_verifies(&f.remote.work, &f.signers, "HEAD"));
    let run = f.sync(&f.host(), &[]).expect(VERIFY_FAILED);
    assert!(run.stderr.contains("not allowed to sign namespace \"git\""), "{}", run.stderr);
    assert!(f.host().current().is_none(), "nothing checked out on a first deploy either");
}

#[test]
fn expired_and_not_yet_valid_signers_are_refused() {
    let Some(keys) = keys_dir() else { return };
    let key = SigningKey::generate(keys.path(), "ed", "ed25519");
    for options in ["valid-before=\"20200101\"", "valid-after=\"29990101\""] {
        let f = Fixture::new(&key, &[key.allowed("alice", options)]);
        assert!(!git_verifies(&f.remote.work, &f.signers, "HEAD"), "{options}");
        let run = f.sync(&f.host(), &[]).expect(VERIFY_FAILED);
        assert!(run.stderr.contains("was not valid at"), "{options}: {}", run.stderr);
    }
    let f = Fixture::new(&key, &[key.allowed("alice", "valid-after=\"20200101\",valid-before=\"29990101Z\"")]);
    f.sync(&f.host(), &[]).expect(APPLIED);
}

#[test]
fn verify_command_prints_verdicts_for_ci_of_the_config_repo() {
    let Some(keys) = keys_dir() else { return };
    let key = SigningKey::generate(keys.path(), "ed", "ed25519");
    let f = Fixture::new(&key, &[key.allowed("alice", "")]);
    let base = f.remote.head();
    f.remote.write("a", "1");
    let unsigned = f.remote.commit("unsigned");
    let host = f.host();
    let signers = f.signers.to_str().unwrap();
    let work = f.remote.work.to_str().unwrap();

    let run: Run =
        host.command(&["verify", "--repo", work, "--allowed-signers", signers, &base]).output().unwrap().into();
    let run = run.expect(UP_TO_DATE);
    assert!(run.stdout.contains(&format!("ok   {base} signed by alice")), "{}", run.stdout);

    let range = format!("{base}..HEAD");
    let run: Run =
        host.command(&["verify", "--repo", work, "--allowed-signers", signers, &range]).output().unwrap().into();
    let run = run.expect(VERIFY_FAILED);
    assert!(run.stdout.contains(&format!("FAIL {unsigned} commit is not signed")), "{}", run.stdout);

    let run: Run =
        host.command(&["verify", "--repo", work]).env_remove("GITOPS_ALLOWED_SIGNERS").output().unwrap().into();
    assert!(run.expect(USAGE).stderr.contains("--allowed-signers"));
}

#[test]
fn signed_annotated_tag_is_deployed_and_an_unsigned_one_refused() {
    let Some(keys) = keys_dir() else { return };
    let key = SigningKey::generate(keys.path(), "ed", "ed25519");
    let f = Fixture::new(&key, &[key.allowed("alice", "")]);
    let keyfile = key.private.to_str().unwrap();
    let sign = ["-c", "gpg.format=ssh", "-c"];
    let signing_key = format!("user.signingkey={keyfile}");
    let mut args: Vec<&str> = sign.to_vec();
    args.extend([signing_key.as_str(), "tag", "-s", "-m", "release", "prod"]);
    git(&f.remote.work, &args);
    git(&f.remote.work, &["tag", "-a", "-m", "unsigned", "staging"]);
    git(&f.remote.work, &["push", "-q", "origin", "prod", "staging"]);
    let host = f.host();

    f.sync(&host, &["--ref", "refs/tags/staging"]).expect(VERIFY_FAILED);
    assert!(host.state_json()["verification"]["reason"].as_str().unwrap().contains("tag is not signed"));

    f.sync(&host, &["--ref", "refs/tags/prod"]).expect(APPLIED);
    assert_eq!(host.applied(), Some(f.remote.head()));
}

#[test]
fn rollback_to_an_applied_commit_is_refused_even_without_the_cache() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let first = remote.head();
    let host = Host::new(dir.path(), &remote.file_url());
    host.sync(&[]).expect(APPLIED);
    remote.write("x", "1");
    remote.commit("second");
    host.sync(&[]).expect(APPLIED);

    fs::remove_dir_all(host.state.join("cache.git")).unwrap();
    remote.force_push(&first);
    let run = host.sync(&[]).expect(NEED_PUSH);
    assert!(run.stderr.contains("rewound"), "{}", run.stderr);

    // A history the host never saw, with the cache gone: diverged, still nothing applied.
    fs::remove_dir_all(host.state.join("cache.git")).unwrap();
    git(&remote.work, &["checkout", "-q", "--orphan", "other"]);
    remote.write("y", "2");
    git(&remote.work, &["add", "-A"]);
    git(&remote.work, &["commit", "-q", "-m", "unrelated"]);
    git(&remote.work, &["push", "-q", "--force", "origin", "other:main"]);
    host.sync(&[]).expect(DIVERGED);
    assert_eq!(host.out_lines().len(), 2);
}

#[test]
fn bad_trust_configuration_exits_2() {
    let Some(keys) = keys_dir() else { return };
    let key = SigningKey::generate(keys.path(), "ed", "ed25519");
    let f = Fixture::new(&key, &[key.allowed("alice", "")]);
    let host = f.host();
    let garbage = f.dir.path().join("garbage_signers");
    fs::write(&garbage, format!("{}\nthis is not a key line\n", key.allowed("alice", "").trim())).unwrap();
    let writable = f.dir.path().join("writable_signers");
    fs::write(&writable, key.allowed("alice", "")).unwrap();
    fs::set_permissions(&writable, fs::Permissions::from_mode(0o666)).unwrap();
    let cases = [
        (vec!["--allowed-signers", garbage.to_str().unwrap()], "line 2"),
        (vec!["--allowed-signers", writable.to_str().unwrap()], "chmod 644"),
        (vec!["--allowed-signers", "/nonexistent/signers"], "/nonexistent/signers"),
        (vec!["--verify-since", "abc"], "--allowed-signers"),
        (vec!["--ref", "prod"], "full ref name"),
    ];
    for (args, needle) in cases {
        let run = host.sync(&args);
        assert_eq!(run.code, USAGE, "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn trust_on_first_use_pins_the_host_key_and_refuses_a_changed_one() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let Some(sshd) = Sshd::start(&sshd_dir(dir.path())) else {
        return;
    };
    let url = sshd.url(&remote.bare);
    let key = sshd.client_key();
    let host = Host::new(dir.path(), &url);
    let flags = ["--ssh-key", key.to_str().unwrap(), "--accept-new-host-key"];

    host.sync(&flags).expect(APPLIED);
    let pinned = fs::read_to_string(host.state.join("known_hosts")).unwrap();
    assert!(pinned.contains("ssh-ed25519"), "{pinned}");
    host.sync(&flags).expect(UP_TO_DATE);

    // Same address and port, new host key: a man in the middle, or a rebuilt server.
    let port: u16 = url.rsplit_once(':').unwrap().1.split('/').next().unwrap().parse().unwrap();
    let key_copy = dir.path().join("client_key");
    fs::copy(&key, &key_copy).unwrap();
    fs::set_permissions(&key_copy, fs::Permissions::from_mode(0o600)).unwrap();
    drop(sshd);
    let other_dir = dir.path().join("sshd2");
    fs::create_dir_all(&other_dir).unwrap();
    let Some(impostor) = Sshd::start_on(&other_dir, "127.0.0.1", port) else {
        return;
    };
    remote.write("x", "1");
    remote.commit("second");
    let run = host.sync(&["--ssh-key", impostor.client_key().to_str().unwrap(), "--accept-new-host-key"]);

    let run = run.expect(RUNTIME_ERROR);
    assert!(run.stderr.contains("host key changed"), "{}", run.stderr);
    let new_fp = fingerprint_of(&impostor.known_hosts());
    assert!(run.stderr.contains(&new_fp), "names the offered key {new_fp}: {}", run.stderr);
    assert_eq!(fs::read_to_string(host.state.join("known_hosts")).unwrap(), pinned, "the pin is kept");
    assert_eq!(host.out_lines().len(), 1);
}

#[test]
fn deploy_key_owned_by_another_user_is_refused() {
    if !tooling::available(&[tooling::ROOT]) {
        return;
    }
    let dir = tempdir();
    let host = Host::new(dir.path(), "ssh://git@127.0.0.1/x");
    let key = dir.path().join("key");
    fs::write(&key, "k").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let status = Command::new("chown").arg("65534").arg(&key).status().unwrap();
    assert!(status.success());
    let run = host.sync(&["--ssh-key", key.to_str().unwrap()]).expect(USAGE);
    assert!(run.stderr.contains("owned by uid 65534"), "{}", run.stderr);
}

#[test]
fn secrets_never_appear_in_any_output() {
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), &format!("{RECORD}\necho \"url=$GITOPS_REPO_URL\""));
    let token = "tok-4f9a1c7e2b8d";
    let url_password = "pw-77a1b2c3d4";
    let backend = HttpGit::start_with_auth(dir.path(), "bot", token);
    let Some(server) = TlsProxy::start(dir.path(), backend.port()) else {
        return;
    };
    let ca = server.ca_file();
    let ca_flags = ["--http-ca-file", ca.to_str().unwrap()];
    let token_file = dir.path().join("token");
    fs::write(&token_file, format!("{token}\n")).unwrap();
    fs::set_permissions(&token_file, fs::Permissions::from_mode(0o600)).unwrap();
    let host = Host::new(dir.path(), &server.url("origin.git"));
    let token_flags =
        [&ca_flags[..], &["--http-token-file", token_file.to_str().unwrap(), "--http-user", "bot"]].concat();

    let mut outputs = Vec::new();
    // Without the token the server refuses: the run fails, naming the URL but not leaking anything.
    outputs.push(host.sync(&ca_flags).expect(RUNTIME_ERROR));
    outputs.push(host.sync(&token_flags).expect(APPLIED));
    remote.write("x", "1");
    remote.commit("second");
    outputs.push(host.sync(&[&token_flags[..], &["--dry-run"]].concat()).expect(APPLIED));
    // A password in the URL is a secret too, also when the fetch fails and the error quotes the URL.
    let with_password = server.url("missing.git").replace("https://", &format!("https://bot:{url_password}@"));
    let leaky = Host::new(&dir.path().join("other"), &with_password);
    outputs.push(leaky.sync(&[&ca_flags[..], &["-v"]].concat()));
    let good_with_password = server.url("origin.git").replace("https://", &format!("https://bot:{token}@"));
    let third = Host::new(&dir.path().join("third"), &good_with_password);
    outputs.push(third.sync(&[&ca_flags[..], &["-v", "--dry-run"]].concat()).expect(APPLIED));
    outputs.push(third.sync(&[&ca_flags[..], &["-v"]].concat()).expect(APPLIED));

    let mut everything = String::new();
    for run in &outputs {
        everything.push_str(&run.stdout);
        everything.push_str(&run.stderr);
    }
    for state in [&host.state, &leaky.state, &third.state] {
        everything.push_str(&read_tree(state));
    }
    assert!(everything.contains("bot:***@"), "the URL is shown redacted: {everything}");
    assert!(everything.contains("url=https://bot:***@"), "the entrypoint gets the redacted URL");
    assert!(backend.requests() > 0);
    for secret in [token, url_password] {
        assert!(!everything.contains(secret), "{secret} leaked:\n{everything}");
    }
}

/// Every text file below `dir` (cache excluded), concatenated.
fn read_tree(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = fs::read_dir(dir) else { return out };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.file_name().is_some_and(|n| n == "cache.git") {
            continue;
        }
        if path.is_dir() {
            out.push_str(&read_tree(&path));
        } else if let Ok(text) = fs::read_to_string(&path) {
            out.push_str(&text);
        }
    }
    out
}

#[test]
fn systemd_credentials_supply_the_signers_and_the_deploy_key() {
    let Some(keys) = keys_dir() else { return };
    let key = SigningKey::generate(keys.path(), "ed", "ed25519");
    let dir = tempdir();
    let remote = Remote::with_script(dir.path(), RECORD);
    let credentials = dir.path().join("credentials");
    fs::create_dir_all(&credentials).unwrap();
    fs::write(credentials.join("allowed-signers"), key.allowed("alice", "")).unwrap();
    let host = Host::new(dir.path(), &remote.file_url()).env("CREDENTIALS_DIRECTORY", credentials.to_str().unwrap());

    // No --allowed-signers flag: the credential alone turns verification on, and the unsigned commit is refused.
    let run = host.sync(&[]).expect(VERIFY_FAILED);
    assert!(run.stderr.contains("commit is not signed"), "{}", run.stderr);

    // A deploy key credential is checked like --ssh-key.
    fs::write(credentials.join("ssh-key"), "key").unwrap();
    fs::set_permissions(credentials.join("ssh-key"), fs::Permissions::from_mode(0o644)).unwrap();
    let run = host.sync(&[]).expect(USAGE);
    assert!(run.stderr.contains("credential ssh-key"), "{}", run.stderr);
}
