#!/usr/bin/env python3
"""What `gitops fleet --repo-url` costs: the tip of a 10,000-file repository fetched alone (depth 1)
to read the hosts it names, against the ref listing alone (what `--repo-url` did before it read
the hosts) and against no `--repo-url` at all.

A repository of `--files` files (2,000 host directories with two files each, the rest shared
roles, 1 KiB each, 30 commits of history, a `.gitops/hosts` list) is served over file://
(`git upload-pack`, as for any local path); an empty Debian Prometheus answers the queries.

    python3 bench/fleet_repo_url.py [--files 10000] [--rounds 7] [--base OLD_GITOPS]

`--base` times an older binary's `--repo-url` (the ref listing) beside this one. Writes
bench/results/fleet-repo-url.md and prints it. Needs git and prometheus (tests/setup).
"""
import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time

from promlab import start_prometheus, timed, write_report

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)


def say(message):
    print(f"fleet-repo-url: {message}", file=sys.stderr, flush=True)


def git(cwd, *args):
    env = dict(os.environ, GIT_CONFIG_GLOBAL="/dev/null", GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="bench",
               GIT_AUTHOR_EMAIL="bench@example.invalid", GIT_COMMITTER_NAME="bench",
               GIT_COMMITTER_EMAIL="bench@example.invalid")
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def repository(root, files):
    """A working clone pushing to root/origin.git; returns the bare repository's path."""
    bare, work = os.path.join(root, "origin.git"), os.path.join(root, "work")
    os.makedirs(bare)
    git(bare, "init", "-q", "--bare", "-b", "main")
    os.makedirs(work)
    git(work, "init", "-q", "-b", "main")
    rng = random.Random(7)
    words = ["listen", "port", "user", "group", "path", "mode", "enable", "timeout", "retries", "level"]

    def text():
        return "".join(f"{rng.choice(words)}_{rng.randrange(1000)} = {rng.randrange(10 ** 6)}\n" for _ in range(40))

    hosts = 2000
    paths = [f"hosts/host-{i:04d}/{name}" for i in range(hosts) for name in ("run.sh", "vars.env")]
    paths += [f"roles/role-{i % 100:02d}/files/file-{i:05d}.conf" for i in range(files - len(paths) - 2)]
    for path in paths:
        full = os.path.join(work, path)
        os.makedirs(os.path.dirname(full), exist_ok=True)
        with open(full, "w") as f:
            f.write(text())
    with open(os.path.join(work, "run.sh"), "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.makedirs(os.path.join(work, ".gitops"))
    with open(os.path.join(work, ".gitops", "hosts"), "w") as f:
        f.write("".join(f"edge-{i:03d}\n" for i in range(500)))
    git(work, "add", "-A")
    git(work, "commit", "-qm", "the fleet")
    for n in range(29):
        for path in rng.sample(paths, 200):
            with open(os.path.join(work, path), "w") as f:
                f.write(text())
        git(work, "commit", "-qam", f"change {n}")
    git(work, "push", "-q", bare, "main")
    return bare, len(paths) + 2


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--base", help="an older gitops whose --repo-url only lists refs")
    ap.add_argument("--output", default=os.path.join(BENCH, "results", "fleet-repo-url.md"))
    args = ap.parse_args()
    if not shutil.which("prometheus"):
        sys.exit("fleet-repo-url: prometheus is missing; install it with: sudo tests/setup")
    say("building the release binary")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    gitops = os.path.join(ROOT, "target", "release", "gitops")
    work = tempfile.mkdtemp(prefix="gitops-fleet-repo-url-")
    proc = None
    try:
        started = time.time()
        bare, files = repository(work, args.files)
        say(f"{files} files, 30 commits in {time.time() - started:.0f}s")
        clone = os.path.join(work, "depth1.git")
        git(work, "clone", "-q", "--bare", "--depth", "1", f"file://{bare}", clone)
        pack = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(clone, "objects"))
                   for f in fs)
        full = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(os.path.join(bare, "objects"))
                   for f in fs)
        proc, url = start_prometheus(work, os.path.join(work, "data"), "fleet-repo-url", 60)
        env = dict(os.environ, GITOPS_CONFIG="/dev/null", RUST_LOG="error,gitops=debug")
        # An empty Prometheus: exit 5 (no host matched), after the repository was read.
        runs = [("no --repo-url", [gitops, "fleet", "--prometheus", url], (5,))]
        if args.base:
            runs.append(("--repo-url, ref listing only (before)",
                         [args.base, "fleet", "--prometheus", url, "--repo-url", f"file://{bare}"], (0,)))
        runs.append(("--repo-url, tip fetched at depth 1 (now)",
                     [gitops, "fleet", "--prometheus", url, "--repo-url", f"file://{bare}", "--json"], (5,)))
        rows = []
        for label, cmd, codes in runs:
            best, median, rss, done = timed(cmd, env, args.rounds, codes, "fleet-repo-url")
            rows.append((label, best, median, rss))
            if "depth 1" in label:
                missing = done.stdout.count('"state": "missing"')
                assert missing == 2500, f"{missing} missing hosts, not 2,500"
        lines = [
            f"# gitops fleet --repo-url: what reading the hosts costs ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            f"A repository of {files:,} files (2,000 host directories, 500 more hosts in `.gitops/hosts`, 30 commits;"
            f" {full / 2 ** 20:.1f} MiB of objects), over file:// (`git upload-pack`); an empty Prometheus;"
            f" `bench/fleet_repo_url.py`. Machine: {os.cpu_count()} cores, shared. The tip's objects at depth 1:"
            f" {pack / 2 ** 20:.1f} MiB (what crosses the network once per call).",
            "",
            "| call | min s | median s | peak RSS MiB |",
            "|---|---|---|---|",
        ]
        for label, best, median, rss in rows:
            lines.append(f"| {label} | {best:.2f} | {median:.2f} | {rss:.1f} |")
        lines += ["", f"Rounds: {args.rounds}. The call that reads the hosts reports all 2,500 named hosts missing (none reported)."]
        write_report(args.output, lines)
    finally:
        if proc:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
