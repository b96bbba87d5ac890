#!/usr/bin/env bash
# `just dist`: the release files, in dist/ (or --out DIR):
#   gitops-VERSION-x86_64-linux-gnu.tar.gz   binary, units, cron and OpenRC files, man pages,
#                                            completions, licenses, README, install.sh
#   gitops_VERSION-1_amd64.deb, gitops-VERSION-1.x86_64.rpm   the same binary, packaged
#   SHA256SUMS
# The binary is linked against glibc 2.17 with cargo-zigbuild (zig as the linker, no other Rust
# target needed), so it starts on RHEL/Rocky/Alma 8, Debian 11, Ubuntu 20.04, Amazon Linux 2
# and anything newer; it is built without the `generate` feature, and the man pages and
# completions it ships come from a dev build that has it (or GITOPS_GENERATOR=PATH, a gitops
# built with that feature from this tree, e.g. the one `cargo test` built).
# Needs cargo-zigbuild (with zig from the ziglang package), cargo-deb, cargo-generate-rpm and objdump: sudo tests/setup.
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/tools.sh

out=dist
case "${1:-}" in
    --out) out=${2:?--out needs a directory} ;;
    "") ;;
    *) echo "usage: packaging/dist.sh [--out DIR]" >&2; exit 2 ;;
esac

glibc=2.17                      # the floor; README's "Where it runs" lists what it covers
triple=x86_64-unknown-linux-gnu
platform=x86_64-linux-gnu       # the name the files carry, as in --version
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n 1)
# A target directory of its own: zig as C compiler and linker would otherwise churn the
# fingerprints that plain `cargo build --release` keeps in target/.
target_dir=target/dist
bin=$target_dir/$triple/release/gitops
started=$SECONDS
say() { echo "dist: $* ($((SECONDS - started))s)"; }

for tool in cargo-zigbuild cargo-deb cargo-generate-rpm objdump strip valgrind; do
    if ! command -v "$tool" >/dev/null; then
        echo "dist: $tool is not installed; sudo tests/setup installs it (see tests/tools.sh)" >&2
        exit 2
    fi
done

# The shipped binary: release profile, no `generate`, glibc 2.17 symbols, the floor in --version,
# and its code laid out for a no-op poll: build, profile a poll of that very build
# (packaging/link-order.py), relink with the functions it ran side by side (build.rs), which
# makes a poll's peak RSS about 2 MiB smaller. The builds keep their symbols, which the profile
# needs (stripping in the profile would be another profile, hence other symbol names), and the
# shipped copy is stripped afterwards.
order=$PWD/$target_dir/link-order.ld
mkdir -p "$target_dir"
[ -s "$order" ] || echo 'SECTIONS { .text.hot : { *(.text.gitops_not_profiled_yet) } } INSERT BEFORE .text;' >"$order"
build() {
    GITOPS_LINK_ORDER=$order CARGO_PROFILE_RELEASE_STRIP=false GITOPS_BUILD_GLIBC=$glibc CARGO_TARGET_DIR=$target_dir \
        cargo zigbuild --quiet --locked --release --no-default-features --target "$triple.$glibc"
}
build
before=$(sha256sum "$order")
python3 packaging/link-order.py "$bin" "$order"
[ "$(sha256sum "$order")" = "$before" ] || build
hot=$(objdump -h "$bin" | awk '$2 == ".text.hot" { print $3 }')
hot=$((16#${hot:-0}))
if [ "$hot" -lt 262144 ]; then
    echo "dist: $bin has $hot bytes of .text.hot: the link order did not take" >&2
    exit 1
fi
# cargo-deb and cargo-generate-rpm take the binary from $pkg_dir/$triple/release/.
pkg_dir=$target_dir/pkg
shipped=$pkg_dir/$triple/release/gitops
mkdir -p "$(dirname "$shipped")"
strip --strip-all -o "$shipped" "$bin"
newest=$(objdump -T "$shipped" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -n 1)
if [ "$(printf '%s\n' "$newest" "GLIBC_$glibc" | sort -V | tail -n 1)" != "GLIBC_$glibc" ]; then
    echo "dist: $shipped needs $newest, more than GLIBC_$glibc" >&2
    exit 1
fi
say "built $shipped ($(stat -c %s "$shipped") bytes, needs $newest, $hot bytes of code laid out for a poll): $("$shipped" --version)"

# Man pages and completions, written by a build with `generate` from the same clap definitions.
generator=${GITOPS_GENERATOR:-}
if [ -z "$generator" ]; then
    cargo build --quiet --locked
    generator=${CARGO_TARGET_DIR:-target}/debug/gitops
fi
case "$("$generator" --version)" in
    "gitops $version "*) ;;
    *) echo "dist: $generator is not gitops $version: $("$generator" --version)" >&2; exit 1 ;;
esac
rm -rf target/assets/man target/assets/completions
"$generator" -q generate man --out target/assets/man
"$generator" -q generate completions --out target/assets/completions

# The tarball: one directory, files owned by root, mtimes of the last commit (reproducible).
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH=$epoch
name=gitops-$version-$platform
stage=$target_dir/stage/$name
rm -rf "$target_dir/stage"
mkdir -p "$stage/systemd" "$stage/man" "$stage/completions" "$stage/contrib/cron" "$stage/contrib/openrc"
install -m 0755 "$shipped" "$stage/gitops"
install -m 0755 packaging/install.sh "$stage/install.sh"
install -m 0644 systemd/gitops* "$stage/systemd/"
install -m 0644 target/assets/man/*.1 "$stage/man/"
install -m 0644 target/assets/completions/* "$stage/completions/"
install -m 0644 contrib/cron/gitops "$stage/contrib/cron/gitops"
install -m 0755 contrib/openrc/gitops "$stage/contrib/openrc/gitops"
install -m 0644 packaging/gitops.env README.md LICENSE-MIT LICENSE-APACHE "$stage/"
rm -rf "$out"
mkdir -p "$out"
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" -C "$target_dir/stage" -cf - "$name" \
    | gzip -9n >"$out/$name.tar.gz"

# The packages, of the same binary (cargo-deb and cargo-generate-rpm look under
# $CARGO_TARGET_DIR/$triple/release/ for target/release/gitops with --target).
CARGO_TARGET_DIR=$pkg_dir cargo deb --quiet --no-build --no-strip --target "$triple" --output "$out"
# xz, not zstd: Amazon Linux 2's rpm 4.11 cannot unpack zstd payloads.
cargo generate-rpm --target "$triple" --target-dir "$pkg_dir" --payload-compress xz --output "$out"

(cd "$out" && sha256sum -- *.tar.gz *.deb *.rpm >SHA256SUMS)
say "wrote $out/:"
(cd "$out" && ls -l -- * && cat SHA256SUMS)
