#!/usr/bin/env python3
"""`gitops fleet` against a synthetic 10,000-host fleet in Debian's real Prometheus.

Every host's metrics textfile (the series `gitops sync --metrics-file` writes, plus node_exporter's
`up`) is generated as OpenMetrics for the last few minutes, backfilled into TSDB blocks with
`promtool tsdb create-blocks-from openmetrics`, and served by a Prometheus started on 127.0.0.1.
Some hosts are behind, failing, silent (their series end hours ago and `up` is 0) or pending a
reboot, so every path of the query runs. Then `gitops fleet` (release build) is timed, text and
--json, with its peak RSS.

    python3 bench/fleet_scale.py [--hosts 10000] [--rounds 5]

Writes bench/results/fleet-scale.md and prints it. Needs prometheus and promtool (tests/setup).
"""
import argparse
import hashlib
import json
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
RESULTS = ["up-to-date", "applied", "need-push", "diverged", "apply-failed", "verify-failed", "error",
           "usage-error", "locked"]


def say(message):
    print(f"fleet-scale: {message}", file=sys.stderr, flush=True)


def commit(n):
    return hashlib.sha1(str(n).encode()).hexdigest()


def openmetrics(path, hosts, now):
    """Three scrapes, 30 s apart, of every host; silent hosts stopped three hours ago."""
    rng = random.Random(7)
    tip, old = commit(0xC0FFEE), commit(0xBEEF)
    plan = []
    for i in range(hosts):
        r = rng.random()
        kind = ("failing" if r < 0.01 else "silent" if r < 0.015 else "behind" if r < 0.05
                else "reboot" if r < 0.055 else "ok")
        plan.append((f"host-{i:05d}", f"10.{i // 65536}.{i // 256 % 256}.{i % 256}:9100", kind))
    live = [now - 90, now - 60, now - 30]
    quiet = [now - 3 * 3600 - 60, now - 3 * 3600 - 30, now - 3 * 3600]
    families = {}

    def add(name, kind, labels, value, times):
        families.setdefault(name, (kind, []))[1].append((labels, value, times))

    for host, instance, kind in plan:
        base = f'instance="{instance}",job="node"'
        times = quiet if kind == "silent" else live
        # A failed apply leaves the tip live (its entrypoint failed) and the old commit the last applied.
        live_commit = old if kind == "behind" else tip
        applied = old if kind in ("behind", "failing") else tip
        remote = old if kind == "behind" else tip
        add("gitops_info", "gauge", f'{base},host="{host}",version="0.1.0"', 1, times)
        live_result = "failed" if kind == "failing" else "applied"
        add("gitops_live_commit_info", "gauge", f'{base},branch="main",commit="{live_commit}",result="{live_result}"',
            1, times)
        add("gitops_live_commit_timestamp_seconds", "gauge", f'{base},branch="main",commit="{live_commit}"',
            now - 3900, times)
        add("gitops_applied_commit_info", "gauge", f'{base},branch="main",commit="{applied}"', 1, times)
        add("gitops_applied_commit_timestamp_seconds", "gauge", f'{base},branch="main",commit="{applied}"',
            now - 4000, times)
        add("gitops_remote_commit_info", "gauge", f'{base},branch="main",commit="{remote}"', 1, times)
        add("gitops_remote_commit_timestamp_seconds", "gauge", f'{base},branch="main",commit="{remote}"',
            now - (5000 if remote == old else 3000), times)
        add("gitops_commits_behind", "gauge", base, 3 if kind == "failing" else 0, times)
        result = "apply-failed" if kind == "failing" else "up-to-date"
        for label in RESULTS:
            add("gitops_last_result", "gauge", f'{base},result="{label}"', int(label == result), times)
        add("gitops_last_exit_code", "gauge", base, 30 if kind == "failing" else 0, times)
        if kind == "failing":
            add("gitops_last_error_info", "gauge", f'{base},error="entrypoint run.sh exited with code 1"', 1, times)
        add("gitops_last_run_timestamp_seconds", "gauge", base, times[-1] - 5, times)
        add("gitops_last_success_timestamp_seconds", "gauge", base, now - 7200 if kind == "failing" else times[-1] - 5,
            times)
        add("gitops_run_duration_seconds", "gauge", base, 0.005, times)
        add("gitops_consecutive_failures", "gauge", base, 12 if kind == "failing" else 0, times)
        add("gitops_apply_failures_total", "counter", base, 12 if kind == "failing" else 0, times)
        add("gitops_reboot_pending", "gauge", base, int(kind == "reboot"), times)
        if kind == "reboot":
            add("gitops_reboot_pending_since_timestamp_seconds", "gauge", base, now - 600, times)
        add("gitops_metrics_version", "gauge", base, 2, times)
        add("up", "gauge", base, 0 if kind == "silent" else 1, live)
    with open(path, "w") as out:
        for name, (kind, samples) in families.items():
            out.write(f"# TYPE {name} {kind}\n")
            for labels, value, times in samples:
                for t in times:
                    out.write(f"{name}{{{labels}}} {value} {t}\n")
        out.write("# EOF\n")
    counts = {}
    for _, _, kind in plan:
        counts[kind] = counts.get(kind, 0) + 1
    return counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hosts", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--output", default=os.path.join(BENCH, "results", "fleet-scale.md"))
    args = ap.parse_args()
    for tool in ("prometheus", "promtool"):
        if not shutil.which(tool):
            sys.exit(f"fleet-scale: {tool} is missing; install it with: sudo tests/setup")
    say("building the release binary")
    subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
    gitops = os.path.join(ROOT, "target", "release", "gitops")
    work = tempfile.mkdtemp(prefix="gitops-fleet-scale-")
    proc = None
    try:
        now = int(time.time())
        om = os.path.join(work, "fleet.om")
        started = time.time()
        counts = openmetrics(om, args.hosts, now)
        say(f"generated {os.path.getsize(om) // (1024 * 1024)} MiB of OpenMetrics in {time.time() - started:.1f}s")
        data = os.path.join(work, "data")
        started = time.time()
        subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", om, data], check=True,
                       capture_output=True)
        backfill = time.time() - started
        say(f"backfilled in {backfill:.1f}s")
        proc, url = start_prometheus(work, data, "fleet-scale", 120)
        cmd = [gitops, "fleet", "--prometheus", url, "--selector", '{job="node"}']
        env = dict(os.environ, GITOPS_CONFIG="/dev/null", RUST_LOG="error,gitops=debug")
        rows = []
        for label, extra in (("text", []), ("--json", ["--json"])):
            best, median, rss, done = timed(cmd + extra, env, args.rounds, (0, 3), "fleet-scale")
            rows.append((label, best, median, rss, done.stdout))
        text_out = rows[0][4]
        doc = json.loads(rows[1][4])
        assert len(doc["hosts"]) == args.hosts, len(doc["hosts"])
        summary = text_out.splitlines()[0]
        lines = [
            f"# gitops fleet at scale ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())})",
            "",
            f"A synthetic fleet of {args.hosts:,} hosts ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}),"
            " backfilled into Debian's Prometheus 2.42 with `promtool tsdb create-blocks-from openmetrics`"
            f" ({backfill:.0f} s); `bench/fleet_scale.py`. Machine: {os.cpu_count()} cores, shared.",
            "",
            f"Summary line: `{summary}`",
            "",
            "| output | min s | median s | peak RSS MiB |",
            "|---|---|---|---|",
        ]
        for label, best, median, rss, _ in rows:
            lines.append(f"| {label} | {best:.2f} | {median:.2f} | {rss:.1f} |")
        lines += ["", f"Rounds: {args.rounds}. Time is the whole command: the queries, Prometheus answering them, "
                  "parsing, assessing and printing."]
        write_report(args.output, lines)
    finally:
        if proc:
            proc.kill()
            proc.wait()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
