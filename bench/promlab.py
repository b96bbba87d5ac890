"""What the fleet benchmarks share (fleet_scale.py, fleet_repo_url.py): a Debian Prometheus on a
free port, timed runs of one gitops command, and the report file."""
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_prometheus(work, data, who, ready_within):
    """Prometheus on 127.0.0.1 with its TSDB in `data`, ready; returns (process, URL)."""
    port = free_port()
    config = os.path.join(work, "prometheus.yml")
    with open(config, "w") as f:
        f.write("global:\n  scrape_interval: 1m\n")
    with open(os.path.join(work, "prometheus.log"), "w") as log:
        proc = subprocess.Popen(["prometheus", f"--config.file={config}", f"--storage.tsdb.path={data}",
                                 f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL, stderr=log)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + ready_within
    while True:
        try:
            if urllib.request.urlopen(f"{url}/-/ready", timeout=2).status == 200:
                return proc, url
        except OSError:
            pass
        if time.time() > deadline:
            proc.kill()
            sys.exit(f"{who}: prometheus not ready in {ready_within} s")
        time.sleep(0.2)


def timed(cmd, env, rounds, codes, who):
    """`rounds` runs of cmd: (min s, median s, peak RSS MiB from gitops's -v line, the last run)."""
    times, rss, out = [], 0, None
    for _ in range(rounds):
        t = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        times.append(time.perf_counter() - t)
        if done.returncode not in codes:
            sys.exit(f"{who}: {cmd} exited {done.returncode}: {done.stderr}")
        out = done
        for line in done.stderr.splitlines():
            if "peak-rss-kib=" in line:
                rss = max(rss, int(line.rsplit("=", 1)[1]))
    return min(times), statistics.median(times), rss / 1024, out


def write_report(path, lines):
    report = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(report)
    print(report)
