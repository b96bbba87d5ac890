#!/bin/sh
# A real sync cycle against the example config repo: no root, and no network once built
# (the first `cargo build` downloads the crates).
# State goes under ${XDG_STATE_HOME:-~/.local/state}/gitops-demo and is reset on each run.
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/.." && pwd)"
demo="${XDG_STATE_HOME:-$HOME/.local/state}/gitops-demo"
# GITOPS_BIN lets the test suite run this script with the binary it already built.
gitops="${GITOPS_BIN:-}"
if [ -z "$gitops" ]; then
    cargo build --quiet --manifest-path "$top/Cargo.toml"
    gitops="${CARGO_TARGET_DIR:-$top/target}/debug/gitops"
fi
say() { echo "$@" >&2; }
# A word as a shell would need it to be pasted back.
q() {
    case $1 in
        *[!A-Za-z0-9_./:@=+,-]*) printf "'%s'" "$(printf %s "$1" | sed "s/'/'\\\\''/g")" ;;
        *) printf %s "$1" ;;
    esac
}

rm -rf "$demo"
mkdir -p "$demo/origin"
cp -R "$here/repo/." "$demo/origin/"
git() { command git -c init.defaultBranch=main -c user.name=demo -c user.email=demo@localhost "$@"; }
git -C "$demo/origin" init -q
git -C "$demo/origin" add -A
git -C "$demo/origin" commit -q -m "example config"

# --config /dev/null: this host's /etc/gitops/gitops.env, if it has one, is not the demo's.
run() {
    set +e
    TARGET_ROOT="$demo/root" "$gitops" sync --config /dev/null --repo-url "file://$demo/origin" --state-dir "$demo/state" "$@"
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

g=$(q "$gitops")
state=$(q "$demo/state")
origin=$(q "$demo/origin")
sync="$g sync --config /dev/null --repo-url $(q "file://$demo/origin") --state-dir $state"
say
say "next, try (paste these):"
say "  # what is live, what was last applied, the last run, health"
say "  $g status --state-dir $state"
say "  # the entrypoint's output in the last run"
say "  $g logs --state-dir $state"
say "  # every attempt so far, newest first"
say "  $g history --state-dir $state"
say "  # one more commit, then the plan for it: the incoming commits, a diffstat, what would run (exit 10: would apply)"
say "  echo 'Bye.' >> $origin/files/etc/motd && git -C $origin -c user.name=demo -c user.email=demo@localhost commit -qam bye"
say "  $sync --dry-run"
say "  # apply it (TARGET_ROOT keeps the example's run.sh out of /)"
say "  TARGET_ROOT=$(q "$demo/root") $sync"
