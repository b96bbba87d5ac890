# gitops tasks; `just --list` shows them.

# A real sync cycle against the example config repo (no root; the first build downloads crates).
demo:
    sh examples/demo.sh

# The whole test suite, as CI runs it: tests/setup installs what the tests need, then
# GITOPS_TEST_STRICT=1 cargo test. Needs root (apt, port 22, tmpfs, systemd-nspawn): sudo just test.
# Plain `cargo test` runs without root and skips what it cannot run.
test:
    tests/run

# Formatting and lints, as CI expects them.
lint:
    cargo fmt --all -- --check
    cargo clippy --all-targets -- -D warnings

# Issue 8's suite: a timed cold release build, then every scenario interleaved with the seed's git flow
# and ansible-pull (after `bench/setup`); ratios, RSS, fleet view, targets -> bench/results/latest.md.
# The release files are built first (into target/dist/files), so the shipped binary is measured
# against the plain release build, side by side.
bench rounds="15":
    packaging/dist.sh --out target/dist/files
    python3 bench/bench.py --rounds {{rounds}}

# What decrypting 100 small age secrets adds to an apply (issue 17's budget: ≤ 50 ms).
bench-secrets rounds="15":
    cargo build --release
    sh bench/secrets.sh target/release/gitops {{rounds}}

# gitops check on a generated repository of 10,000 files and 200 age secrets (goal ≤ 1 s) and on a small one
# (also through a real `pre-commit run` when tests/setup installed pre-commit); writes bench/results/check.md.
bench-check rounds="10":
    cargo build --release --quiet
    python3 bench/check.py --rounds {{rounds}}

# Push → applied latency through `gitops webhook` (goal ≤ 2 s); writes bench/results/webhook-latency.md.
bench-webhook rounds="20":
    cargo build --release --quiet
    python3 bench/webhook_latency.py --rounds {{rounds}}

# The release files in dist/: gitops-VERSION-x86_64-linux-gnu.tar.gz (binary, units, man pages,
# completions, install.sh), the .deb and .rpm of the same binary, and SHA256SUMS. The binary is
# linked against glibc 2.17 (RHEL 8, Debian 11, Ubuntu 20.04, Amazon Linux 2 and newer) with
# cargo-zigbuild; the tools come from `sudo tests/setup`. See packaging/dist.sh.
dist:
    packaging/dist.sh

# The packages are part of the release files.
alias package := dist
