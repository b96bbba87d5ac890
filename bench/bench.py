#!/usr/bin/env python3
"""gitops against the seed's git-CLI flow and ansible-pull, side by side in one run.

The machine is shared and noisy, so every claim is a ratio measured in the same run: each
round runs every contender once, interleaved (the order rotates), and the report gives min
and median wall time, the ratio of medians to the baseline, and peak RSS.

    python3 bench/bench.py [--rounds 15] [--build cold|incremental|none] [--quick]

Writes bench/results/latest.md and prints it. `bench/setup` installs ansible-core into
bench/.venv for the ansible-pull rows (they are skipped, with a note, without it).
"""
import argparse
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(BENCH)
SEED_FLOW = os.path.join(BENCH, "seed-flow.sh")
ANSIBLE_PULL = os.path.join(BENCH, ".venv", "bin", "ansible-pull")
ENV = dict(os.environ, GIT_CONFIG_NOSYSTEM="1", GIT_CONFIG_GLOBAL="/dev/null", GITOPS_CONFIG="/dev/null",
           GIT_AUTHOR_NAME="b", GIT_AUTHOR_EMAIL="b@b", GIT_COMMITTER_NAME="b", GIT_COMMITTER_EMAIL="b@b",
           RUST_LOG="error,gitops=debug", LC_ALL="C.UTF-8")
for key in ("GIT_SSH_COMMAND", "GIT_SSH", "GIT_DIR", "GIT_WORK_TREE", "SSH_AUTH_SOCK"):
    ENV.pop(key, None)
RUN_SH = "#!/bin/sh\ntrue\n"
# ansible-pull runs a playbook from the repository; this one runs the same entrypoint.
LOCAL_YML = """- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - name: run.sh
      command: ./run.sh
      args:
        chdir: "{{ playbook_dir }}"
"""
MIB = 1024 * 1024
# Fleet view: this many hosts, each polling once every POLL_INTERVAL seconds.
FLEET_HOSTS = 10_000
POLL_INTERVAL = 300

# (label, files, commits); the deep repository shows the no-op poll is flat in history.
REPOS = [("small", 100, 10), ("large", 10_000, 5_000), ("deep", 1_000, 50_000)]
QUICK_REPOS = [("small", 100, 10), ("large", 2_000, 500), ("deep", 200, 5_000)]


def say(message):
    print(f"bench: {message}", file=sys.stderr, flush=True)


def git(*args, cwd=None, env=None, input=None):
    return subprocess.run(["git", *args], cwd=cwd, env=env or ENV, input=input, check=True,
                          capture_output=True).stdout.decode().strip()


# ---------------------------------------------------------------- running and measuring

def run(cmd, cwd=None, env=None):
    """Run one command; return (seconds, peak RSS KiB of its largest process, exit code, stderr)."""
    with tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env or ENV, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        return elapsed, usage.ru_maxrss, proc.returncode, err.read().decode(errors="replace")


class Contender:
    """One way of deploying: a name and how to run it against a URL into a directory."""

    def __init__(self, name, short):
        self.name, self.short = name, short
        self.last_synced = None  # seconds gitops spent in syncfs/fsync before publishing (its -v line)

    def env(self, transport):
        return transport.client_env

    def command(self, transport, url, where):
        raise NotImplementedError

    def once(self, transport, url, where, ok=(0,), wrap=False):
        """One run: (seconds, peak RSS KiB). `wrap` measures RSS through /usr/bin/time (see below)."""
        command = self.command(transport, url, where)
        with tempfile.NamedTemporaryFile() as rss_file:
            if wrap:
                # ru_maxrss of a process counts the high-water mark of the image that exec'd it, here a
                # ~20 MiB Python: /usr/bin/time (small) forks the flow and reports its largest process.
                command = ["/usr/bin/time", "-f", "%M", "-o", rss_file.name, *command]
            elapsed, rss, code, err = run(command, env=self.env(transport))
            if code not in ok:
                sys.exit(f"bench: {self.name} exited {code} (wanted {ok}) on {url}:\n{err[-3000:]}")
            if wrap:
                rss = int(open(rss_file.name).read().split()[-1])
        # gitops reports its own peak (VmHWM), children excluded; the others: their largest process.
        own = [int(line.split("peak-rss-kib=")[1]) for line in err.splitlines() if "peak-rss-kib=" in line]
        synced = [line.rsplit("synced in ", 1)[1].strip() for line in err.splitlines() if "synced in " in line]
        self.last_synced = parse_duration(synced[0]) if synced else None
        return elapsed, own[0] if own else (rss if wrap else None)


class Seed(Contender):
    def __init__(self):
        super().__init__("seed: git CLI flow (bench/seed-flow.sh)", "seed")

    def command(self, transport, url, where):
        return ["sh", SEED_FLOW, url, where]


class Gitops(Contender):
    def __init__(self, binary):
        super().__init__("gitops sync", "gitops")
        self.binary = binary

    def env(self, transport):
        return ENV

    def command(self, transport, url, where):
        return [self.binary, "sync", "-v", "--repo-url", url, "--state-dir", where, *transport.gitops_flags]


class AnsiblePull(Contender):
    def __init__(self):
        super().__init__("ansible-pull --only-if-changed", "ansible")

    def env(self, transport):
        return dict(transport.client_env, ANSIBLE_HOME=os.path.join(transport.work, "ansible-home"),
                    ANSIBLE_LOCAL_TEMP=os.path.join(transport.work, "ansible-tmp"),
                    ANSIBLE_PYTHON_INTERPRETER=os.path.join(BENCH, ".venv", "bin", "python3"), ANSIBLE_NOCOLOR="1")

    def command(self, transport, url, where):
        return [ANSIBLE_PULL, "-U", url, "-C", "main", "-d", where, "--only-if-changed", "-i", "localhost,",
                "local.yml"]


def parse_duration(text):
    """A Rust Debug duration ("65.2ms", "80.8µs", "1.2s") in seconds."""
    for unit, scale in (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3), ("s", 1.0)):
        if text.endswith(unit):
            return float(text[:-len(unit)]) * scale
    return None


# ---------------------------------------------------------------- fixtures

def make_repo(path, files, commits):
    """A bare repo with `files` files (run.sh and local.yml among them) and `commits` commits, via fast-import."""
    git("init", "-q", "--bare", "-b", "main", path)
    out = []
    for c in range(commits):
        out.append(f"commit refs/heads/main\nmark :{c + 1}\ncommitter b <b@b> {1700000000 + c} +0000\ndata 2\nc\n")
        if c > 0:
            out.append(f"from :{c}\n")
        if c == 0:
            out.append(f"M 100755 inline run.sh\ndata {len(RUN_SH)}\n{RUN_SH}\n")
            out.append(f"M 100644 inline local.yml\ndata {len(LOCAL_YML)}\n{LOCAL_YML}\n")
            for f in range(files - 2):
                body = f"file {f}\n"
                out.append(f"M 100644 inline d{f % 100}/f{f}.txt\ndata {len(body)}\n{body}\n")
        else:
            body = f"change {c}\n"
            out.append(f"M 100644 inline d{c % 100}/f{c % max(files - 2, 1)}.txt\ndata {len(body)}\n{body}\n")
    git("fast-import", "--quiet", cwd=path, input="".join(out).encode())
    git("gc", "-q", cwd=path)


class Pusher:
    """Adds one commit changing one file to a remote's main, through a scratch clone."""

    def __init__(self, bare, scratch):
        self.scratch = scratch
        git("clone", "-q", bare, scratch)

    def push(self, tag):
        git("pull", "-q", "--ff-only", cwd=self.scratch)
        with open(os.path.join(self.scratch, "d0", "f0.txt"), "w") as fh:
            fh.write(f"bench change {tag}\n")
        git("commit", "-q", "-am", f"bench {tag}", cwd=self.scratch)
        git("push", "-q", "origin", "main", cwd=self.scratch)


# ---------------------------------------------------------------- servers

def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what):
    deadline = time.time() + 10
    while time.time() < deadline:
        if proc.poll() is not None:
            sys.exit(f"bench: {what} exited early")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"bench: {what} did not listen on {port}")


class Sshd:
    """sshd on 127.0.0.1 with a generated host key and deploy key, as tests/support/servers.rs does."""

    def __init__(self, work):
        self.dir = os.path.join(work, "sshd")
        os.makedirs(self.dir)
        for key in ("host_ed25519", "client_ed25519"):
            subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "bench", "-f",
                            os.path.join(self.dir, key)], check=True)
        shutil.copy(os.path.join(self.dir, "client_ed25519.pub"), os.path.join(self.dir, "authorized_keys"))
        os.makedirs("/run/sshd", exist_ok=True)
        self.port = free_port()
        config = os.path.join(self.dir, "sshd_config")
        with open(config, "w") as fh:
            fh.write(f"ListenAddress 127.0.0.1\nPort {self.port}\nHostKey {self.dir}/host_ed25519\n"
                     f"PidFile {self.dir}/sshd.pid\nAuthorizedKeysFile {self.dir}/authorized_keys\n"
                     "StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                     "PermitRootLogin prohibit-password\nMaxStartups 100\nLogLevel ERROR\n")
        self.proc = subprocess.Popen(["/usr/sbin/sshd", "-D", "-e", "-f", config], stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.dir, "log"), "w"))
        wait_port(self.port, self.proc, "sshd")
        self.key = os.path.join(self.dir, "client_ed25519")
        self.user = subprocess.run(["id", "-un"], capture_output=True, text=True, check=True).stdout.strip()
        with open(os.path.join(self.dir, "host_ed25519.pub")) as fh:
            host_key = " ".join(fh.read().split()[:2])
        self.known_hosts = os.path.join(self.dir, "known_hosts")
        with open(self.known_hosts, "w") as fh:
            fh.write(f"[127.0.0.1]:{self.port} {host_key}\n")

    def known_hosts_for(self, port):
        """known_hosts pinning the same key under another port (for a proxy in front of sshd)."""
        path = os.path.join(self.dir, f"known_hosts_{port}")
        with open(self.known_hosts) as src, open(path, "w") as dst:
            dst.write(src.read().replace(f"]:{self.port} ", f"]:{port} "))
        return path

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class GitDaemon:
    """git daemon (upload-pack only) serving the bench's work dir: the raw protocol, for the fleet view."""

    def __init__(self, base):
        exec_path = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
        self.port = free_port()
        self.proc = subprocess.Popen([os.path.join(exec_path, "git-daemon"), "--reuseaddr", "--export-all",
                                      "--listen=127.0.0.1", f"--port={self.port}", f"--base-path={base}", base],
                                     env=ENV, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "git daemon")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


class CountingProxy:
    """A TCP proxy on 127.0.0.1 that counts the bytes each way (the traffic a Git server would see)."""

    def __init__(self, backend_port):
        self.backend_port = backend_port
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(64)
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.up = self.down = self.connections = 0
        self.active = 0
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.backend_port))
            with self.lock:
                self.connections += 1
                self.active += 2
            threading.Thread(target=self.pump, args=(client, server, "up"), daemon=True).start()
            threading.Thread(target=self.pump, args=(server, client, "down"), daemon=True).start()

    def pump(self, src, dst, direction):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                with self.lock:
                    setattr(self, direction, getattr(self, direction) + len(data))
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            with self.lock:
                self.active -= 1

    def snapshot(self):
        deadline = time.time() + 5
        while self.active and time.time() < deadline:
            time.sleep(0.01)
        with self.lock:
            return self.up, self.down, self.connections

    def stop(self):
        self.listener.close()


def tree_cpu(pid):
    """CPU time of a server process, its live descendants (nginx workers, fcgiwrap) and every child they reaped
    (per-connection forks: upload-pack, sshd-session, git http-backend). Live processes count their threads'
    on-CPU time from schedstat (nanoseconds: a static file costs less than a clock tick); reaped ones the
    cutime+cstime their parent collected (ticks, averaged over many polls)."""
    total, stack = 0.0, [pid]
    while stack:
        p = stack.pop()
        try:
            with open(f"/proc/{p}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/schedstat") as fh:
                    total += int(fh.read().split()[0]) / 1e9
                with open(f"/proc/{p}/task/{task}/children") as fh:
                    stack.extend(int(c) for c in fh.read().split())
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone meanwhile: its parent's cutime has it
    return total


class Nginx:
    """Debian's nginx with TLS (a private CA's P-256 certificate for 127.0.0.1): smart HTTP through fcgiwrap and
    `git http-backend` under /git/, and the work dir as static files (the change probe's `info/refs`)."""

    @staticmethod
    def available():
        return all(os.access(tool, os.X_OK) for tool in ("/usr/sbin/nginx", "/usr/sbin/fcgiwrap"))

    def __init__(self, work):
        self.dir = os.path.join(work, "nginx")
        os.makedirs(os.path.join(self.dir, "tmp"))
        d = self.dir
        with open(os.path.join(d, "ext.cnf"), "w") as fh:
            fh.write("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n")
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
        for args in (["req", "-x509", *ec, "-days", "1", "-subj", "/CN=bench CA", "-keyout", "ca.key", "-out", "ca.pem"],
                     ["req", *ec, "-subj", "/CN=127.0.0.1", "-keyout", "key.pem", "-out", "req.csr"],
                     ["x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                      "-days", "1", "-extfile", "ext.cnf", "-out", "cert.pem"]):
            subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True)
        self.ca = os.path.join(d, "ca.pem")
        self.socket = os.path.join(d, "fcgiwrap.sock")
        # Its own process group: the workers it preforks outlive a parent that is only terminated.
        self.fcgiwrap = subprocess.Popen(["/usr/sbin/fcgiwrap", "-c", "2", "-s", f"unix:{self.socket}"],
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=open(os.path.join(d, "fcgiwrap.log"), "w"), start_new_session=True)
        self.port, self.plain_port = free_port(), free_port()
        backend = subprocess.run(["git", "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
        user = "user root;\n" if os.getuid() == 0 else ""
        with open(os.path.join(d, "nginx.conf"), "w") as fh:
            fh.write(f"""{user}daemon off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 512; }}
http {{
  access_log {d}/access.log;
  client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
  uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
  server {{
    listen 127.0.0.1:{self.plain_port};
    root {work};
    location / {{ }}
  }}
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    root {work};
    location ~ ^/git(/.*)$ {{
      include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME {backend}/git-http-backend;
      fastcgi_param GIT_PROJECT_ROOT {work};
      fastcgi_param GIT_HTTP_EXPORT_ALL "";
      fastcgi_param PATH_INFO $1;
      fastcgi_pass unix:{self.socket};
    }}
  }}
}}
""")
        self.proc = subprocess.Popen(["/usr/sbin/nginx", "-p", d, "-e", f"{d}/error.log", "-c", f"{d}/nginx.conf"],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port, self.proc, "nginx")

    def pids(self):
        return [self.proc.pid, self.fcgiwrap.pid]

    def stop(self):
        self.proc.terminate()  # not SIGKILL: nginx's master stops its workers first, which a killed one would orphan
        self.proc.wait()
        os.killpg(self.fcgiwrap.pid, signal.SIGTERM)
        self.fcgiwrap.wait()


class Transport:
    """How contenders reach the repositories: file:// or ssh:// to the bench's sshd."""

    def __init__(self, name, url_of, client_env, gitops_flags, work):
        self.name, self.url_of, self.client_env, self.gitops_flags, self.work = (
            name, url_of, client_env, gitops_flags, work)


def file_transport(work):
    return Transport("file://", lambda path: f"file://{path}", ENV, [], work)


def ssh_transport(work, sshd, port=None, known_hosts=None):
    port = port or sshd.port
    known_hosts = known_hosts or sshd.known_hosts
    # The same ssh options gitops uses (pinned host key, only the deploy key), for the git CLI too.
    ssh = (f"ssh -o BatchMode=yes -o StrictHostKeyChecking=yes -o IdentitiesOnly=yes -i {sshd.key} "
           f"-o UserKnownHostsFile={known_hosts} -o GlobalKnownHostsFile=/dev/null")
    env = dict(ENV, GIT_SSH_COMMAND=ssh)
    flags = ["--ssh-key", sshd.key, "--known-hosts", known_hosts]
    return Transport("ssh://", lambda path: f"ssh://{sshd.user}@127.0.0.1:{port}{path}", env, flags, work)


# ---------------------------------------------------------------- scenarios

class Results:
    def __init__(self):
        self.rows = []  # (scenario, repo, transport, contender short name, name, times, rss, baseline?)

    def add(self, scenario, repo, transport, contender, times, rss, baseline, synced):
        self.rows.append(dict(scenario=scenario, repo=repo, transport=transport.name, short=contender.short,
                              name=contender.name, times=times, rss=rss, baseline=baseline, synced=synced))

    def median(self, scenario, repo, transport, short):
        for row in self.rows:
            if (row["scenario"], row["repo"], row["transport"], row["short"]) == (scenario, repo, transport, short):
                return statistics.median(row["times"])
        return None

    def row(self, scenario, repo, transport, short):
        for row in self.rows:
            if (row["scenario"], row["repo"], row["transport"], row["short"]) == (scenario, repo, transport, short):
                return row
        return None


def measure(results, scenario, repo, transport, contenders, rounds, job, before_round=None, limited=None):
    """Run `job(contender, round)` for each contender, interleaved, `rounds` times; the first is the baseline.

    `limited` maps a contender to fewer rounds (ansible-pull: seconds per run)."""
    times = {c.short: [] for c in contenders}
    rss = {c.short: [] for c in contenders}
    synced = {c.short: [] for c in contenders}
    limited = limited or {}
    for r in range(rounds):
        if before_round:
            before_round(r)
        order = contenders[r % len(contenders):] + contenders[:r % len(contenders)]
        for contender in order:
            if r >= limited.get(contender.short, rounds):
                continue
            # Untimed: nothing the run before left unwritten is charged to this one. gitops syncs the
            # filesystem before it publishes (git clone syncs nothing), so without this it would pay for
            # the other contender's writeback in every other round.
            os.sync()
            elapsed, peak = job(contender, r, False)
            times[contender.short].append(elapsed)
            if contender.last_synced is not None:
                synced[contender.short].append(contender.last_synced)
            if peak is not None:
                rss[contender.short].append(peak)
    # One more, untimed round measures the others' peak RSS through /usr/bin/time.
    if before_round:
        before_round(rounds)
    for contender in contenders:
        rss[contender.short].append(job(contender, rounds, True)[1])
    for i, contender in enumerate(contenders):
        results.add(scenario, repo, transport, contender, times[contender.short], rss[contender.short], i == 0,
                    synced[contender.short])


def run_scenarios(args, work, gitops, transports, repos, results):
    seed = Seed()
    ansible = AnsiblePull() if os.access(ANSIBLE_PULL, os.X_OK) else None
    contenders = [seed, gitops] + ([ansible] if ansible else [])
    limited = {"ansible": min(args.rounds, args.ansible_rounds)}
    for transport in transports:
        for label, files, commits, bare in repos:
            url = transport.url_of(bare)
            tag = f"{transport.name[:-3]}-{label}"
            say(f"{transport.name} {label}: no-op poll")
            places = {c.short: os.path.join(work, f"{tag}-{c.short}-deployed") for c in contenders}
            for c in contenders:
                c.once(transport, url, places[c.short], ok=(0, 10))
            measure(results, "no-op poll", label, transport, contenders, args.rounds,
                    lambda c, r, wrap: c.once(transport, url, places[c.short], wrap=wrap), limited=limited)
            if label == "deep":
                continue

            say(f"{transport.name} {label}: 1-file change applied")
            pusher = Pusher(bare, os.path.join(work, f"{tag}-scratch"))
            measure(results, "1-file change applied", label, transport, contenders, args.rounds,
                    lambda c, r, wrap: c.once(transport, url, places[c.short], ok=(0, 10), wrap=wrap),
                    before_round=lambda r: pusher.push(f"{tag}-{r}"), limited=limited)
            # Deleting is left until the repository is done: this ext4 has no journal, and its inode
            # allocator then skips over inodes freed in the last ~30 s one by one, which would make the
            # next scenario's file creations pay for this one's deletions.
            trash = list(places.values())

            say(f"{transport.name} {label}: first deploy")

            def first(c, r, wrap):
                place = os.path.join(work, f"{tag}-{c.short}-first-{r}")
                trash.append(place)
                return c.once(transport, url, place, ok=(0, 10), wrap=wrap)
            measure(results, "first deploy", label, transport, contenders, args.rounds, first, limited=limited)

            # ansible-pull has no notion of a rewind: it would check the older commit out and run it.
            say(f"{transport.name} {label}: rewind detected")
            rewound = os.path.join(work, f"{tag}-rewind.git")
            git("clone", "-q", "--bare", "--no-local", bare, rewound)
            rewind_url = transport.url_of(rewound)
            rewind_places = {c.short: os.path.join(work, f"{tag}-{c.short}-rewind") for c in (seed, gitops)}
            for c in (seed, gitops):
                c.once(transport, rewind_url, rewind_places[c.short], ok=(0, 10))
            git("update-ref", "refs/heads/main", "main~1", cwd=rewound)
            measure(results, "rewind detected", label, transport, [seed, gitops], args.rounds,
                    lambda c, r, wrap: c.once(transport, rewind_url, rewind_places[c.short], ok=(20,), wrap=wrap))
            for place in trash + list(rewind_places.values()):
                shutil.rmtree(place, ignore_errors=True)
    return ansible is not None


# ---------------------------------------------------------------- fleet view

def fleet_view(work, gitops, sshd, bare, polls):
    """Bytes on the wire, connections and server CPU per no-op poll, per transport: gitops against the seed's
    `git fetch`, and gitops with the change probe (nginx serving `info/refs` as a static file over https)."""
    rows = []
    daemon = GitDaemon(work)
    git("update-server-info", cwd=bare)  # the probe's file, as the post-receive hook of the README keeps it
    nginx = Nginx(work) if Nginx.available() else None
    rel = os.path.relpath(bare, work)
    try:
        servers = [("git://", daemon.port, [daemon.proc.pid]), ("ssh://", sshd.port, [sshd.proc.pid])]
        if nginx:
            servers.append(("https://", nginx.port, nginx.pids()))
        else:
            say("fleet view: nginx or fcgiwrap missing (apt-get install nginx fcgiwrap): no https:// or probe rows")
        for name, backend, server_pids in servers:
            proxy = CountingProxy(backend)
            if name == "git://":
                transport = Transport(name, lambda path: f"git://127.0.0.1:{proxy.port}/{rel}", ENV, [], work)
            elif name == "ssh://":
                transport = ssh_transport(work, sshd, proxy.port, sshd.known_hosts_for(proxy.port))
            else:
                transport = Transport(name, lambda path: f"https://127.0.0.1:{proxy.port}/git/{rel}",
                                      dict(ENV, GIT_SSL_CAINFO=nginx.ca), ["--http-ca-file", nginx.ca], work)
            url = transport.url_of(bare)
            tag = name.rstrip(":/")
            clone = os.path.join(work, f"fleet-{tag}-clone")
            state = os.path.join(work, f"fleet-{tag}-state")
            git("clone", "-q", url, clone, env=transport.client_env)
            gitops.once(transport, url, state, ok=(10,))
            jobs = [("seed: git fetch", lambda: run(["git", "fetch", "-q"], cwd=clone, env=transport.client_env)),
                    ("gitops sync (no-op)", lambda: run(gitops.command(transport, url, state), env=ENV))]
            for label, job in jobs:
                rows.append(measure_polls(name, label, job, polls, proxy, server_pids))
            if nginx and name == "ssh://":
                # The probe in front of the most expensive transport: the Git server should see nothing. Over
                # https (a full TLS handshake per run) and over plain http (a lying probe can only delay).
                for scheme, port in (("https", nginx.port), ("http", nginx.plain_port)):
                    probe_proxy = CountingProxy(port)
                    probe = f"{scheme}://127.0.0.1:{probe_proxy.port}/{rel}/info/refs"
                    probed = Transport(name, transport.url_of, transport.client_env,
                                       transport.gitops_flags + ["--probe-url", probe, "--http-ca-file", nginx.ca],
                                       work)
                    probe_state = os.path.join(work, f"fleet-probe-{scheme}-state")
                    gitops.once(probed, url, probe_state, ok=(10,))
                    job = lambda: run(gitops.command(probed, url, probe_state), env=ENV)
                    # Cheap polls: more of them, for a CPU figure above the clock's resolution.
                    row = measure_polls(f"probe ({scheme}, nginx static) → {name}", "gitops sync --probe-url (304)",
                                        job, polls * 3, probe_proxy, nginx.pids(), git_proxy=proxy,
                                        git_pids=server_pids)
                    rows.append(row)
                    probe_proxy.stop()
            proxy.stop()
    finally:
        daemon.stop()
        if nginx:
            nginx.stop()
    return rows


def measure_polls(transport, label, job, polls, proxy, server_pids, git_proxy=None, git_pids=None):
    """Run `job` `polls` times; per poll: bytes and connections through `proxy`, CPU of `server_pids` (trees),
    and the connections and CPU that reached the Git server (`git_proxy`, `git_pids`) when that is another one."""
    time.sleep(0.3)
    up0, down0, conn0 = proxy.snapshot()
    git0 = git_proxy.snapshot()[2] if git_proxy else None
    cpu0 = sum(tree_cpu(pid) for pid in server_pids + (git_pids or []))
    for _ in range(polls):
        code = job()[2]
        if code != 0:
            sys.exit(f"bench: fleet view: {label} exited {code}")
    time.sleep(0.3)  # let the server reap its per-connection children
    up1, down1, conn1 = proxy.snapshot()
    git1 = git_proxy.snapshot()[2] if git_proxy else None
    cpu1 = sum(tree_cpu(pid) for pid in server_pids + (git_pids or []))
    connections = (conn1 - conn0) / polls
    return dict(transport=transport, who=label, up=(up1 - up0) / polls, down=(down1 - down0) / polls,
                connections=connections, git_connections=(git1 - git0) / polls if git_proxy else connections,
                cpu=(cpu1 - cpu0) / polls)


# ---------------------------------------------------------------- build

def build(mode):
    """Build the release binary; return (binary path, cold build seconds or None)."""
    if mode == "none":
        return os.path.join(ROOT, "target", "release", "gitops"), None
    if mode == "incremental":
        subprocess.run(["cargo", "build", "--release", "--quiet"], cwd=ROOT, check=True)
        return os.path.join(ROOT, "target", "release", "gitops"), None
    target = os.path.join(ROOT, "target", "bench-cold")
    shutil.rmtree(target, ignore_errors=True)
    say("cold release build (empty target dir, crates already downloaded) ...")
    subprocess.run(["cargo", "fetch", "--quiet"], cwd=ROOT, check=True)
    start = time.perf_counter()
    subprocess.run(["cargo", "build", "--release", "--quiet", "--offline", "--target-dir", target], cwd=ROOT,
                   check=True)
    elapsed = time.perf_counter() - start
    binary = os.path.join(ROOT, "target", "release", "gitops-bench")
    os.makedirs(os.path.dirname(binary), exist_ok=True)
    shutil.copy(os.path.join(target, "release", "gitops"), binary)
    shutil.rmtree(target, ignore_errors=True)
    return binary, elapsed


def shipped_vs_release(work, release, shipped, bare, rounds):
    """No-op polls of the binary `just dist` ships and the plain release build, interleaved on one
    repository: {name: (binary, sizes, peak RSS KiB list, seconds list)}."""
    out = {}
    for name, binary in (("release", release), ("shipped", shipped)):
        state = os.path.join(work, f"side-{name}")
        Gitops(binary).once(file_transport(work), f"file://{bare}", state, ok=(10,))
        out[name] = (binary, [], [])
    for i in range(rounds * 3):
        for name in (("release", "shipped") if i % 2 == 0 else ("shipped", "release")):
            binary, rss, times = out[name]
            elapsed, peak = Gitops(binary).once(file_transport(work), f"file://{bare}",
                                                os.path.join(work, f"side-{name}"))
            rss.append(peak)
            times.append(elapsed)
    return out


# ---------------------------------------------------------------- report

def fmt_ms(seconds):
    return f"{seconds * 1000:.1f}"


def verdict(ok):
    return "**met**" if ok else "**not met**"


def report(args, results, fleet, binary, cold_build, ansible_ran, repos, load_before, side):
    lines = [
        f"# gitops benchmark ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.rounds} rounds"
        + (", quick fixtures" if args.quick else "") + ")",
        "",
        f"Machine: {os.cpu_count()} cores, shared; load average {load_before:.1f} at the start. Ratios are "
        "medians measured side by side in the same rounds (interleaved, order rotating); absolute times drift.",
        "",
        "Repositories: " + "; ".join(f"{label} ({files:,} files, {commits:,} commits)"
                                     for label, files, commits, _ in repos) + ".",
        "Baseline (ratio 1.00x): the seed's flow, `bench/seed-flow.sh` — `git clone` + `./run.sh` on first use, "
        "then `git fetch` + `rev-parse @` + `rev-parse @{u}` + `merge-base`, and `git pull` + `./run.sh` when behind.",
        "Peak RSS: gitops's own process (VmHWM, its `-v` line; children such as a local upload-pack or ssh "
        "excluded); for the others the largest process of the flow (`/usr/bin/time`, one extra untimed round). "
        "`run.sh` is `true`.",
    ]
    if ansible_ran:
        lines.append(f"ansible-pull (`--only-if-changed`, ansible-core from `bench/setup`) runs the first "
                     f"{min(args.rounds, args.ansible_rounds)} rounds only (seconds per run); it has no rewind "
                     "detection, so it is not in that scenario.")
    else:
        lines.append("ansible-pull: **skipped** — ansible-core is not installed; run `bench/setup` (pip into "
                     "bench/.venv) to add those rows.")
    lines += ["", "| scenario | repo | transport | contender | min ms | median ms | ratio | peak RSS MiB |",
              "|---|---|---|---|---|---|---|---|"]
    base = {}
    for row in results.rows:
        key = (row["scenario"], row["repo"], row["transport"])
        if row["baseline"]:
            base[key] = statistics.median(row["times"])
        if not row["times"]:
            continue
        med = statistics.median(row["times"])
        lines.append(f"| {row['scenario']} | {row['repo']} | {row['transport']} | {row['name']} | "
                     f"{fmt_ms(min(row['times']))} | {fmt_ms(med)} | {med / base[key]:.2f}x | "
                     f"{max(row['rss']) / 1024:.1f} |")

    # What durability costs: gitops syncs a checkout before its name says it is complete; git does not.
    notes = []
    for row in results.rows:
        if row["short"] != "gitops" or not row["synced"] or row["scenario"] not in ("first deploy",
                                                                                    "1-file change applied"):
            continue
        med, sync = statistics.median(row["times"]), statistics.median(row["synced"])
        seed = results.median(row["scenario"], row["repo"], row["transport"], "seed")
        notes.append(f"| {row['scenario']} | {row['repo']} | {row['transport']} | {fmt_ms(med)} | {fmt_ms(sync)} | "
                     f"{med / seed:.2f}x | {(med - sync) / seed:.2f}x |")
    if notes:
        lines += ["", "## Durability", "",
                  "gitops makes a new revision durable before its name promises a complete tree (syncfs for a "
                  "full checkout, fsync of each changed path for a reused one); `git clone` and `git pull` "
                  "sync nothing. Median time gitops spent syncing (its `-v` line), and the ratio without it:", "",
                  "| scenario | repo | transport | gitops median ms | of which syncing ms | ratio | ratio without "
                  "syncing |", "|---|---|---|---|---|---|---|", *notes]

    # Fleet view.
    per_second = FLEET_HOSTS / POLL_INTERVAL
    per_second_fast = FLEET_HOSTS / 60
    lines += ["", f"## Fleet view: one no-op poll, and {FLEET_HOSTS:,} hosts polling every "
              f"{POLL_INTERVAL // 60} minutes ({per_second:.1f} polls/s) or every minute ({per_second_fast:.0f} polls/s)",
              "",
              f"Bytes counted by a TCP proxy in front of the server (both directions; ssh and https bytes are "
              f"encrypted); server CPU is the server's, its live workers' and its reaped children's CPU time "
              f"(git daemon → upload-pack; sshd → session → upload-pack; nginx + fcgiwrap → git http-backend → "
              f"upload-pack), averaged over {args.fleet_polls} polls of the large repository ({args.fleet_polls * 3} "
              "for the probe). https is Debian's nginx with TLS (P-256 certificate) and fcgiwrap running `git "
              "http-backend`; the probe is the same nginx serving `info/refs` as a static file over https (the "
              "README's recipe), in front of the ssh remote: \"Git server connections\" counts what still reached "
              "sshd.", "",
              "| transport | client | bytes to server | bytes from server | connections | Git server connections | "
              "server CPU ms/poll | fleet traffic GB/day (5 min) | fleet server CPU, cores (5 min) | "
              "fleet server CPU, cores (1 min) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for row in fleet:
        total = row["up"] + row["down"]
        lines.append(f"| {row['transport']} | {row['who']} | {row['up']:.0f} | {row['down']:.0f} | "
                     f"{row['connections']:.0f} | {row['git_connections']:.0f} | {row['cpu'] * 1000:.2f} | "
                     f"{total * per_second * 86400 / 1e9:.2f} | {row['cpu'] * per_second:.3f} | "
                     f"{row['cpu'] * per_second_fast:.3f} |")

    size = os.path.getsize(binary)
    lines += ["", "## Binary and build", "",
              f"- Release binary: {size / MIB:.2f} MiB (stripped: `[profile.release]` opt-level = \"z\", lto, "
              "codegen-units = 1, strip, panic = \"abort\").",
              "- Cold release build: " + (f"{cold_build:.0f} s (empty target dir, crates already downloaded, "
                                          f"{os.cpu_count()} shared cores)" if cold_build else
                                          "not measured in this run (`--build cold` measures it).")]

    if side:
        lines += ["", "## The shipped binary against the plain release build", "",
                  "`just dist`'s binary (glibc 2.17 floor, code laid out for a no-op poll by "
                  "`packaging/link-order.py`) and `cargo build --release`'s, no-op polls of the small repository "
                  f"over file://, {len(side['shipped'][1])} each, interleaved.", "",
                  "| binary | size MiB | peak RSS MiB median | max | median ms |", "|---|---|---|---|---|"]
        for name, (path, rss, times) in side.items():
            lines.append(f"| {name} ({os.path.relpath(path, ROOT)}) | {os.path.getsize(path) / MIB:.2f} | "
                         f"{statistics.median(rss) / 1024:.2f} | {max(rss) / 1024:.2f} | "
                         f"{statistics.median(times) * 1000:.1f} |")
    else:
        lines += ["", "The shipped binary was not measured: `just dist` (or `packaging/dist.sh`) builds it."]

    # Targets.
    def ratios(scenario, of, to, to_scenario=None, to_repo=None):
        out = []
        for row in results.rows:
            if row["scenario"] != scenario or row["short"] != of:
                continue
            mine = statistics.median(row["times"])
            other = results.median(to_scenario or scenario, to_repo or row["repo"], row["transport"], to)
            if other:
                out.append((f"{row['repo']} {row['transport']}", mine / other))
        return out

    def target(text, pairs, limit):
        if not pairs:
            return f"- {text}: not measured"
        worst = max(r for _, r in pairs)
        shown = ", ".join(f"{where} {r:.3f}x" if r < 0.1 else f"{where} {r:.2f}x" for where, r in pairs)
        return f"- {text}: {verdict(worst <= limit)} ({shown})"

    noop_rss = [max(row["rss"]) / 1024 for row in results.rows
                if row["scenario"] == "no-op poll" and row["short"] == "gitops"]
    flat = [(f"{row['repo']} {row['transport']}",
             statistics.median(row["times"]) / results.median("no-op poll", "small", row["transport"], "gitops"))
            for row in results.rows
            if row["scenario"] == "no-op poll" and row["short"] == "gitops" and row["repo"] != "small"]
    def by_transport(pairs, name):
        return [(where, r) for where, r in pairs if where.endswith(name)]

    noop_seed, noop_ansible = ratios("no-op poll", "gitops", "seed"), ratios("no-op poll", "gitops", "ansible")
    handshake = "the ssh handshake, the same client and sshd for every contender, dominates"
    lines += ["", "## Targets", "",
              target("no-op poll ≤ 0.5× the seed flow, file://", by_transport(noop_seed, "file://"), 0.5),
              target(f"no-op poll ≤ 0.5× the seed flow, ssh:// ({handshake})", by_transport(noop_seed, "ssh://"),
                     0.5),
              target("no-op poll ≤ 0.01× ansible-pull, file://", by_transport(noop_ansible, "file://"), 0.01)
              if ansible_ran else "- no-op poll ≤ 0.01× ansible-pull: not measured (ansible-core not installed)",
              target(f"no-op poll ≤ 0.01× ansible-pull, ssh:// ({handshake})", by_transport(noop_ansible, "ssh://"),
                     0.01) if ansible_ran else "",
              target("no-op poll on the large/deep repo ≤ 1.2× the small one", flat, 1.2),
              target("1-file change applied ≤ 1.0× the seed's `git pull` flow",
                     ratios("1-file change applied", "gitops", "seed"), 1.0),
              target("first deploy ≤ 1.0× `git clone` + run", ratios("first deploy", "gitops", "seed"), 1.0),
              f"- peak RSS of a no-op ≤ 8 MiB, plain release build: {verdict(max(noop_rss) <= 8)} "
              f"(max {max(noop_rss):.1f} MiB over every repository and transport)",
              f"- binary ≤ 8 MiB, plain release build: {verdict(size <= 8 * MIB)} ({size / MIB:.2f} MiB)"]
    if side:
        _, rss, _ = side["shipped"]
        shipped_size = os.path.getsize(side["shipped"][0])
        lines += [f"- peak RSS of a no-op ≤ 8 MiB, shipped binary: {verdict(max(rss) <= 8 * 1024)} "
                  f"(max {max(rss) / 1024:.2f} MiB)",
                  f"- binary ≤ 8 MiB, shipped binary: {verdict(shipped_size <= 8 * MIB)} ({shipped_size / MIB:.2f} MiB)"]
    probe_rows = [row for row in fleet if row["who"].startswith("gitops sync --probe-url")]
    if probe_rows:
        for row in probe_rows:
            cores = row["cpu"] * FLEET_HOSTS / 60
            lines.append(f"- with the change probe ({row['transport'].split(',')[0][7:]}), {FLEET_HOSTS:,} hosts polling "
                         f"every minute cost the servers < 0.1 core and the Git server no connection: "
                         f"{verdict(cores < 0.1 and row['git_connections'] == 0)} ({cores:.3f} cores, "
                         f"{row['git_connections']:.0f} Git server connections per poll)")
    else:
        lines.append("- change probe < 0.1 core for 10,000 hosts every minute: not measured (nginx/fcgiwrap missing)")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--ansible-rounds", type=int, default=5, help="rounds ansible-pull takes part in")
    ap.add_argument("--fleet-polls", type=int, default=40)
    ap.add_argument("--build", choices=["cold", "incremental", "none"], default="cold",
                    help="cold: time a release build in an empty target dir and bench that binary")
    ap.add_argument("--quick", action="store_true", help="smaller fixtures, for trying the bench itself")
    ap.add_argument("--transports", default="file,ssh")
    ap.add_argument("--shipped", default=os.path.join(ROOT, "target", "dist", "pkg", "x86_64-unknown-linux-gnu",
                                                      "release", "gitops"),
                    help="the binary `just dist` ships (measured against the release build when it exists)")
    ap.add_argument("--output", default=os.path.join(BENCH, "results", "latest.md"))
    args = ap.parse_args()
    load_before = os.getloadavg()[0]
    binary, cold_build = build(args.build)
    if not os.path.exists(binary):
        sys.exit("bench: build first: cargo build --release")
    gitops = Gitops(binary)
    work = tempfile.mkdtemp(prefix="gitops-bench-")
    sshd = None
    try:
        repos = []
        for label, files, commits in (QUICK_REPOS if args.quick else REPOS):
            say(f"making the {label} repository ({files} files, {commits} commits)")
            bare = os.path.join(work, f"{label}.git")
            make_repo(bare, files, commits)
            repos.append((label, files, commits, bare))
        transports = []
        wanted = args.transports.split(",")
        if "file" in wanted:
            transports.append(file_transport(work))
        sshd = Sshd(work)  # the fleet view uses it whatever the transports
        if "ssh" in wanted:
            transports.append(ssh_transport(work, sshd))
        results = Results()
        ansible_ran = run_scenarios(args, work, gitops, transports, repos, results)
        say("fleet view")
        fleet = fleet_view(work, gitops, sshd, repos[1][3], args.fleet_polls)
        side = None
        if os.path.exists(args.shipped):
            say("the shipped binary against the plain release build")
            side = shipped_vs_release(work, binary, args.shipped, repos[0][3], args.rounds)
    finally:
        if sshd:
            sshd.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = report(args, results, fleet, binary, cold_build, ansible_ran, repos, load_before, side)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
