# Sourced by tests/setup and tests/run: where the tools that are not Debian packages live, and
# cargo for root. (The tests look in the same two bin directories: tests/support/tooling.rs.)
#   /var/cache/gitops-ci/venv        pykickstart (ksvalidator) and pre-commit, from PyPI
#   /var/cache/gitops-ci/cargo-deb   cargo-deb, built from crates.io (~1.5 min cold)
venv=/var/cache/gitops-ci/venv
cargo_deb=/var/cache/gitops-ci/cargo-deb
export PATH="$venv/bin:$cargo_deb/bin:$PATH"

# `sudo` resets PATH and HOME: use the invoking user's rustup toolchain when root has none.
if ! command -v cargo >/dev/null && [ -n "${SUDO_USER:-}" ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    export CARGO_HOME="${CARGO_HOME:-$user_home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    export PATH="$CARGO_HOME/bin:$PATH"
fi
