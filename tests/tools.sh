# Sourced by tests/setup and tests/run: where the tools that are not Debian packages live, and
# cargo for root. (The tests look in the same two bin directories: tests/support/tooling.rs.)
#   /var/cache/gitops-ci/venv        pykickstart (ksvalidator) and pre-commit, from PyPI
#   /var/cache/gitops-ci/cargo-deb   cargo-deb, built from crates.io (~1.5 min cold)
#   /var/cache/gitops-ci/zig         zig and cargo-zigbuild, from PyPI (the portable release build)
#   /var/cache/gitops-ci/cargo-generate-rpm   cargo-generate-rpm, built from crates.io (~2.5 min cold)
venv=/var/cache/gitops-ci/venv
cargo_deb=/var/cache/gitops-ci/cargo-deb
zig_venv=/var/cache/gitops-ci/zig
cargo_generate_rpm=/var/cache/gitops-ci/cargo-generate-rpm
export PATH="$venv/bin:$cargo_deb/bin:$zig_venv/bin:$cargo_generate_rpm/bin:$PATH"
# cargo-zigbuild runs zig as `python3 -m ziglang`; the first python3 on PATH is another venv's.
export CARGO_ZIGBUILD_PYTHON_PATH="$zig_venv/bin/python3"

# `sudo` resets PATH and HOME: use the invoking user's rustup toolchain when root has none.
if ! command -v cargo >/dev/null && [ -n "${SUDO_USER:-}" ]; then
    user_home=$(getent passwd "$SUDO_USER" | cut -d: -f6)
    export CARGO_HOME="${CARGO_HOME:-$user_home/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$user_home/.rustup}"
    export PATH="$CARGO_HOME/bin:$PATH"
fi
