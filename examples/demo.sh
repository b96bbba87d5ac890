#!/bin/sh
# A real sync cycle against the example config repo: no root, no network.
# State goes under ${XDG_STATE_HOME:-~/.local/state}/gitops-demo and is reset on each run.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
demo="${XDG_STATE_HOME:-$HOME/.local/state}/gitops-demo"
# GITOPS_BIN lets the test suite run this script with the binary it already built.
gitops="${GITOPS_BIN:-}"
if [ -z "$gitops" ]; then
    cargo build --quiet --manifest-path "$here/../Cargo.toml"
    gitops="$here/../target/debug/gitops"
fi
say() { echo "$@" >&2; }

rm -rf "$demo"
mkdir -p "$demo/origin"
cp -R "$here/repo/." "$demo/origin/"
git() { command git -c init.defaultBranch=main -c user.name=demo -c user.email=demo@localhost "$@"; }
git -C "$demo/origin" init -q
git -C "$demo/origin" add -A
git -C "$demo/origin" commit -q -m "example config"

run() {
    set +e
    TARGET_ROOT="$demo/root" "$gitops" sync --repo-url "file://$demo/origin" --state-dir "$demo/state" "$@"
    code=$?
    set -e
    say "==> exit code $code"
}
say "==> first run: clone, check out, apply"
run
say "==> second run: nothing changed"
run
say "==> a new commit"
echo "Welcome, operator." >> "$demo/origin/files/etc/motd"
git -C "$demo/origin" commit -q -am "motd: greet"
run
say
say "state: $demo/state (state.json, current -> revisions/<commit>, logs/)"
say "applied files: $demo/root/etc/motd"
