#!/usr/bin/env python3
"""gitops against the seed's git-CLI flow, side by side in one run.

Each round runs every contender once, interleaved, so machine noise hits both
alike; the report gives min and median wall time, the ratio of medians to the
baseline, and peak RSS (ru_maxrss of the child, via wait4).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GITOPS = os.path.join(ROOT, "target", "release", "gitops")
ENV = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", GITOPS_CONFIG="/dev/null",
           GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b",
           RUST_LOG="error,gitops=debug")
RUN_SH = "#!/bin/sh\ntrue\n"


def run(cmd, cwd=None):
    """Run one command; return (seconds, peak RSS KiB)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace")
    proc.stderr.close()
    return elapsed, usage.ru_maxrss, proc.returncode, err


def steps(cmds, ok=(0,)):
    """Run commands in sequence as one job: summed time, max RSS.

    wait4 reports the largest process of the tree, which for gitops over file:// is the
    `git upload-pack` it spawns; gitops's own peak comes from its debug line instead.
    """
    total, peak = 0.0, 0
    for cmd, cwd in cmds:
        t, rss, code, err = run(cmd, cwd)
        if code not in ok and code != 0:
            sys.exit(f"bench: {' '.join(cmd)} exited {code}: {err}")
        own = [int(line.split("peak-rss-kib=")[1]) for line in err.splitlines() if "peak-rss-kib=" in line]
        total, peak = total + t, max(peak, own[0] if own else rss)
    return total, peak


def make_repo(path, files, commits):
    """A bare repo with `files` files and `commits` commits, made fast with git fast-import."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", path], check=True, env=ENV)
    lines = []
    mark = 0
    for c in range(commits):
        mark += 1
        lines.append(f"commit refs/heads/main\nmark :{mark}\ncommitter b <b@b> {1700000000 + c} +0000\ndata 2\nc\n")
        if c > 0:
            lines.append(f"from :{mark - 1}\n")
        if c == 0:
            data = RUN_SH.encode()
            lines.append(f"M 100755 inline run.sh\ndata {len(data)}\n{RUN_SH}\n")
            for f in range(files - 1):
                body = f"file {f}\n"
                lines.append(f"M 100644 inline d{f % 100}/f{f}.txt\ndata {len(body)}\n{body}\n")
        else:
            body = f"change {c}\n"
            lines.append(f"M 100644 inline d{c % 100}/f{c % max(files - 1, 1)}.txt\ndata {len(body)}\n{body}\n")
    subprocess.run(["git", "fast-import", "--quiet"], input="".join(lines).encode(), cwd=path, check=True, env=ENV)


def push_change(repo, scratch, n):
    """Add one commit changing one file on top of main, via a scratch clone."""
    subprocess.run(["git", "-C", scratch, "pull", "-q", "--ff-only"], check=True, env=ENV)
    with open(os.path.join(scratch, "d0", "f0.txt"), "w") as fh:
        fh.write(f"bench change {n}\n")
    subprocess.run(["git", "-C", scratch, "commit", "-q", "-am", f"bench {n}"], check=True, env=ENV)
    subprocess.run(["git", "-C", scratch, "push", "-q", "origin", "main"], check=True, env=ENV)


def seed_poll(clone):
    return [(["git", "fetch", "-q"], clone), (["git", "rev-parse", "@"], clone),
            (["git", "rev-parse", "@{u}"], clone), (["git", "merge-base", "@", "@{u}"], clone)]


def gitops_sync(url, state):
    return [([GITOPS, "sync", "-v", "--repo-url", url, "--state-dir", state], None)]


def measure(rounds, contenders, before_round=None):
    results = {name: ([], []) for name, _ in contenders}
    for r in range(rounds):
        if before_round:
            before_round(r)
        for name, job in contenders:
            t, rss = job(r)
            results[name][0].append(t)
            results[name][1].append(rss)
    return results


def table_rows(scenario, results, baseline):
    base = statistics.median(results[baseline][0])
    rows = []
    for name, (times, rss) in results.items():
        med = statistics.median(times)
        rows.append(f"| {scenario} | {name} | {min(times) * 1000:.1f} | {med * 1000:.1f} | {med / base:.2f}x | {max(rss) / 1024:.1f} |")
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()
    if not os.path.exists(GITOPS):
        sys.exit("bench: build first: cargo build --release")
    work = tempfile.mkdtemp(prefix="gitops-bench-")
    rows = []
    try:
        for label, files, commits in [("small", 100, 10), ("large", 10000, 5000)]:
            repo = os.path.join(work, f"{label}.git")
            make_repo(repo, files, commits)
            url = f"file://{repo}"
            clone = os.path.join(work, f"{label}-clone")
            subprocess.run(["git", "clone", "-q", url, clone], check=True, env=ENV)
            state = os.path.join(work, f"{label}-state")
            steps(gitops_sync(url, state), ok=(10,))

            res = measure(args.rounds, [
                ("seed: git fetch + rev-parse + merge-base", lambda r: steps(seed_poll(clone))),
                ("gitops sync (up-to-date)", lambda r: steps(gitops_sync(url, state))),
            ])
            rows += table_rows(f"no-op poll, {label} ({files} files, {commits} commits)", res,
                               "seed: git fetch + rev-parse + merge-base")

            scratch = os.path.join(work, f"{label}-scratch")
            subprocess.run(["git", "clone", "-q", url, scratch], check=True, env=ENV)
            res = measure(args.rounds, [
                ("seed: fetch + compare + git pull + ./run.sh",
                 lambda r: steps(seed_poll(clone) + [(["git", "pull", "-q"], clone), (["./run.sh"], clone)])),
                ("gitops sync (apply)", lambda r: steps(gitops_sync(url, state), ok=(10,))),
            ], before_round=lambda r: push_change(repo, scratch, f"{label}-{r}"))
            rows += table_rows(f"1-file change applied, {label}", res, "seed: fetch + compare + git pull + ./run.sh")

            def fresh(prefix):
                path = os.path.join(work, f"{label}-{prefix}-fresh")
                shutil.rmtree(path, ignore_errors=True)
                return path
            res = measure(max(3, args.rounds // 3), [
                ("seed: git clone + ./run.sh",
                 lambda r: steps([(["git", "clone", "-q", url, fresh("clone")], None),
                                  (["./run.sh"], os.path.join(work, f"{label}-clone-fresh"))])),
                ("gitops sync (first deploy)", lambda r: steps(gitops_sync(url, fresh("state")), ok=(10,))),
            ])
            rows += table_rows(f"first deploy, {label}", res, "seed: git clone + ./run.sh")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    size = os.path.getsize(GITOPS)
    report = [
        f"# gitops benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} rounds, file:// transport)",
        "",
        "Peak RSS: gitops's own (getrusage RUSAGE_SELF); for git, the largest process of the flow.",
        "",
        "| scenario | contender | min ms | median ms | ratio (median) | peak RSS MiB |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        f"Release binary (stripped, opt-level=s, lto): {size / 1048576:.2f} MiB",
    ]
    text = "\n".join(report) + "\n"
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "latest.md"), "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
