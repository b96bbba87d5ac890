#!/usr/bin/env python3
"""`gitops check` on a large fleet repository: 10,000 files and 200 age secrets (issue 24's goal: at most
1 s), and on a small one (a pre-commit hook must feel instant), timed with the release binary.

The large repository is made with `git fast-import`: 50 hosts with their ssh-keygen host keys (10 with an
entrypoint of their own), a shared entrypoint, teardown and health check, .gitops/rollout and
.gitops/recipients, 200 secrets written by the age CLI (150 under hosts/<name>/, 50 under shared/ for every
host) and filler files up to 10,000. It is checked as the index (`gitops check`, what a pre-commit hook
does) and as a commit (`--rev HEAD`, what CI does); both must come out clean. With pre-commit installed
(tests/setup puts it in /var/cache/gitops-ci/venv), a real `pre-commit run` of the hook on the small
repository is timed too.

    just bench-check          (or: python3 bench/check.py [--binary B] [--rounds N] [--out FILE])
"""

import argparse
import concurrent.futures
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOSTS = 50
OWN_ENTRYPOINTS = 10
SECRETS_PER_HOST = 3
SHARED_SECRETS = 50
FILES = 10_000
PRE_COMMIT = Path("/var/cache/gitops-ci/venv/bin/pre-commit")

GIT_ENV = {
    **os.environ,
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}

RUN = """#!/bin/sh
# The shared entrypoint: install what the roles of this host's tags say.
set -eu
for role in $(echo "${GITOPS_TAGS:-}" | tr , ' '); do
    if [ -d "roles/$role/files" ]; then
        cp -R "roles/$role/files/." /etc/
    fi
    case "$role" in
    web) systemctl reload nginx ;;
    db) systemctl reload postgresql ;;
    *) ;;
    esac
done
"""


def run(args, **kwargs):
    return subprocess.run(args, check=True, env=GIT_ENV, **kwargs)


def make_keys(keys: Path):
    """ssh-keygen host keys for every host and an age key for the admin; the admin's age1… recipient."""
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda n: run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", host(n),
                                     "-f", str(keys / host(n))]), range(HOSTS)))
    run(["age-keygen", "-o", str(keys / "admin.agekey")], stderr=subprocess.DEVNULL)
    text = (keys / "admin.agekey").read_text()
    return next(l.split(": ", 1)[1] for l in text.splitlines() if l.startswith("# public key: "))


def host(n):
    return f"web-{n:02d}"


def encrypt(keys: Path, hosts, admin, n):
    """One secret for `hosts` and the admin, written by the age CLI."""
    args = ["age", "-e"]
    for h in hosts:
        args += ["-R", str(keys / f"{h}.pub")]
    args += ["-r", admin]
    return subprocess.run(args, input=f"secret value {n} {os.urandom(8).hex()}\n".encode(),
                          check=True, capture_output=True).stdout


def files(keys: Path, admin):
    """Every file of the large repository: (path, mode, bytes)."""
    out = [("run.sh", "100755", RUN.encode()),
           ("teardown.sh", "100755", b"#!/bin/sh\nset -eu\nrm -f /etc/motd.d/fleet\n"),
           ("health.sh", "100755", b"#!/bin/sh\nsystemctl is-active --quiet nginx\n"),
           (".gitops/rollout", "100644", b"canary=web-00, tag:canary\nwindow=2h\n")]
    recipients = [f"admin {admin}"]
    jobs = []
    for n in range(HOSTS):
        name = host(n)
        out.append((f"hosts/{name}/ssh_host_ed25519_key.pub", "100644", (keys / f"{name}.pub").read_bytes()))
        if n < OWN_ENTRYPOINTS:
            out.append((f"hosts/{name}/run.sh", "100755", b"#!/bin/sh\nset -eu\necho canary\nexec ./run.sh\n"))
        recipients.append(f"hosts/{name}/ {name}")
        jobs += [(f"hosts/{name}/secret-{i}.age", [name]) for i in range(SECRETS_PER_HOST)]
    recipients.append("shared/ " + " ".join(host(n) for n in range(HOSTS)))
    jobs += [(f"shared/token-{i}.age", [host(n) for n in range(HOSTS)]) for i in range(SHARED_SECRETS)]
    out.append((".gitops/recipients", "100644", ("\n".join(recipients) + "\n").encode()))
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        sealed = pool.map(lambda job: encrypt(keys, job[1], admin, job[0]), jobs)
        out += [(path, "100644", data) for (path, _), data in zip(jobs, sealed)]
    n = 0
    while len(out) < FILES:
        role = f"role-{n % 40:02d}"
        out.append((f"roles/{role}/files/etc/{role}/conf-{n:05d}.conf", "100644",
                    f"# generated {n}\nkey_{n} = value {n * 7919 % 10007}\n".encode()))
        n += 1
    return out


def fast_import(repo: Path, entries):
    """One commit of `entries` on main, written with git fast-import."""
    stream = bytearray(b"commit refs/heads/main\ncommitter bench <bench@example.invalid> 1700000000 +0000\n"
                       b"data 6\nbench\n")
    for path, mode, data in entries:
        stream += f"M {mode} inline {path}\ndata {len(data)}\n".encode() + data + b"\n"
    stream += b"\n"
    run(["git", "-C", str(repo), "fast-import", "--quiet"], input=bytes(stream))
    # The index, as a clone has it: what `gitops check` without --rev reads (no files on disk are needed).
    run(["git", "-C", str(repo), "read-tree", "main"])
    run(["git", "-C", str(repo), "symbolic-ref", "HEAD", "refs/heads/main"])


def timed(binary, repo: Path, extra, rounds):
    """Median and min seconds of `gitops check EXTRA` in `repo`, and its summary line (must be clean)."""
    times, summary = [], ""
    for _ in range(rounds):
        start = time.perf_counter()
        done = subprocess.run([binary, "check", *extra], cwd=repo, capture_output=True, text=True,
                              env={**GIT_ENV, "GITOPS_CONFIG": "/dev/null"})
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            sys.exit(f"gitops check {' '.join(extra)} exited {done.returncode}:\n{done.stdout}{done.stderr}")
        summary = done.stdout.strip().splitlines()[-1]
    return statistics.median(times), min(times), summary


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", default=str(ROOT / "target/release/gitops"))
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--out", default=str(ROOT / "bench/results/check.md"))
    args = parser.parse_args()
    binary = str(Path(args.binary).resolve())
    for tool in ("git", "age", "age-keygen", "ssh-keygen"):
        if not shutil.which(tool):
            sys.exit(f"bench/check.py needs {tool} (sudo tests/setup installs it)")
    with tempfile.TemporaryDirectory(prefix="gitops-bench-check-") as tmp:
        tmp = Path(tmp)
        keys, large, small = tmp / "keys", tmp / "large", tmp / "small"
        for d in (keys, large, small):
            d.mkdir()
        started = time.perf_counter()
        admin = make_keys(keys)
        entries = files(keys, admin)
        run(["git", "init", "-q", "-b", "main", str(large)])
        fast_import(large, entries)
        made = time.perf_counter() - started
        secrets = sum(1 for path, _, _ in entries if path.endswith(".age"))
        rows = [("10,000 files, 200 secrets: the index (pre-commit)", *timed(binary, large, [], args.rounds)),
                ("10,000 files, 200 secrets: --rev HEAD (CI)", *timed(binary, large, ["--rev", "HEAD"], args.rounds))]

        run(["git", "init", "-q", "-b", "main", str(small)])
        fast_import(small, [("run.sh", "100755", RUN.encode()),
                            (".gitops/rollout", "100644", b"window=2h\n"),
                            ("files/motd", "100644", b"hello\n")])
        rows.append(("3 files: the index", *timed(binary, small, [], args.rounds)))
        pre_commit = None
        if PRE_COMMIT.exists():
            run(["git", "-C", str(small), "checkout", "-q", "--", "."])
            (small / ".pre-commit-config.yaml").write_text(
                "repos:\n  - repo: local\n    hooks:\n      - id: gitops-check\n        name: gitops check\n"
                "        entry: gitops check\n        language: system\n        pass_filenames: false\n"
                "        always_run: true\n")
            run(["git", "-C", str(small), "add", ".pre-commit-config.yaml"])
            env = {**GIT_ENV, "GITOPS_CONFIG": "/dev/null", "PRE_COMMIT_HOME": str(tmp / "pre-commit"),
                   "PATH": f"{Path(binary).parent}:{os.environ.get('PATH', '')}"}
            times = []
            for _ in range(args.rounds):
                start = time.perf_counter()
                subprocess.run([str(PRE_COMMIT), "run", "gitops-check"], cwd=small, check=True, env=env,
                               capture_output=True)
                times.append(time.perf_counter() - start)
            pre_commit = (statistics.median(times), min(times))

    lines = [f"# gitops check ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"`bench/check.py`, release binary, {args.rounds} rounds each. The large repository: {len(entries)} "
             f"files ({HOSTS} hosts with host keys, {OWN_ENTRYPOINTS} with an entrypoint of their own, {secrets} "
             f"secrets written by the age CLI: {HOSTS * SECRETS_PER_HOST} for one host and the admin, "
             f"{SHARED_SECRETS} for all {HOSTS} hosts and the admin), made with git fast-import in {made:.1f} s. "
             "Machine: 2 cores, shared. Time is the whole command, `sh -n` of every script included.", "",
             "| what | median s | min s | summary line |", "|---|---|---|---|"]
    for what, median, fastest, summary in rows:
        lines.append(f"| {what} | {median:.3f} | {fastest:.3f} | `{summary}` |")
    if pre_commit:
        lines.append(f"| 3 files: `pre-commit run gitops-check` (the framework's own start included) | "
                     f"{pre_commit[0]:.3f} | {pre_commit[1]:.3f} | |")
    goal = rows[0][1] <= 1.0 and rows[1][1] <= 1.0
    lines += ["", f"Goal (issue 24): the large repository in at most 1 s: {'met' if goal else 'NOT met'}."]
    report = "\n".join(lines) + "\n"
    Path(args.out).write_text(report)
    print(report)


if __name__ == "__main__":
    main()
