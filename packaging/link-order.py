#!/usr/bin/env python3
"""Write the linker script that places the functions a no-op poll runs side by side.

usage: link-order.py BINARY SCRIPT.ld

BINARY is a release build that still has its symbols. It runs under callgrind, in a scratch
directory, a real cycle against a local repository: a no-op poll, after the first deploy that
sets it up, then `status`. The script names the functions the no-op ran first, then those only
the first deploy ran, then `status`'s; it is inserted before `.text`, so everything it does not
name keeps the linker's layout. Why: the kernel maps a binary's code 64 KiB around each page a
process touches, so a poll's resident memory is the number of 64 KiB windows its code is spread
over (build.rs links with the script when GITOPS_LINK_ORDER names it).

A few functions run or not by chance (a float printed by the slow path, a hash table's probing),
so two profiles of one binary differ by a handful of names: SCRIPT is rewritten only when it
places less than 99% of what this profile ran, and packaging/dist.sh relinks only then.
"""
import os
import re
import shutil
import subprocess
import sys
import tempfile

VALID = re.compile(r"[A-Za-z0-9_.$]+")  # a name a linker script takes as it is


def executed(profile, binary):
    """The mangled names of the functions of `binary` that ran, in the order callgrind lists them."""
    names, objects, order, obj = {}, {}, [], None
    with open(profile, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = re.match(r"(ob|fn|cfn|cob)=\((\d+)\)(?: (.*))?$", line.rstrip("\n"))
            if not m:
                continue
            kind, ident, name = m.groups()
            table = objects if kind in ("ob", "cob") else names
            if name is not None:
                table[ident] = name
            if kind == "ob":
                obj = objects[ident]
            # Valgrind knows a binary's code by its `.text`: the functions a previous link order
            # placed in `.text.hot` come as object "???", with their names.
            elif kind == "fn" and obj in (binary, "???"):
                order.append(names[ident])
    return order


def profile(binary, work):
    """Callgrind profiles of a no-op poll, the first deploy before it, and `status`."""
    origin = os.path.join(work, "origin")
    env = dict(os.environ, HOME=work, GIT_CONFIG_NOSYSTEM="1", GIT_AUTHOR_NAME="dist",
               GIT_AUTHOR_EMAIL="dist@localhost", GIT_COMMITTER_NAME="dist", GIT_COMMITTER_EMAIL="dist@localhost",
               GIT_AUTHOR_DATE="2026-01-01T00:00:00Z", GIT_COMMITTER_DATE="2026-01-01T00:00:00Z")
    os.makedirs(origin)
    with open(os.path.join(origin, "run.sh"), "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(os.path.join(origin, "run.sh"), 0o755)
    for args in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "profile"]):
        subprocess.run(["git", "-C", origin, *args], env=env, check=True)
    state = os.path.join(work, "state")
    sync = ["sync", "--config", "/dev/null", "--repo-url", f"file://{origin}", "--state-dir", state, "--host", "h"]
    runs = {"first": sync, "noop": sync, "status": ["status", "--state-dir", state]}
    out = {}
    for name, args in runs.items():
        out[name] = os.path.join(work, f"callgrind.{name}")
        done = subprocess.run(["valgrind", "-q", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={out[name]}",
                               binary, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode not in (0, 10):
            sys.exit(f"link-order: `gitops {' '.join(args)}` under callgrind exited {done.returncode}:\n{done.stderr}")
    return [out["noop"], out["first"], out["status"]]


def placed_by(script):
    """The function names an existing script places."""
    try:
        with open(script) as f:
            return set(re.findall(r"\*\(\.text\.([A-Za-z0-9_.$]+)\)", f.read()))
    except FileNotFoundError:
        return set()


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: link-order.py BINARY SCRIPT.ld")
    binary, script = os.path.abspath(sys.argv[1]), sys.argv[2]
    work = tempfile.mkdtemp(prefix="gitops-link-order-")
    try:
        groups, seen = [], set()
        for prof in profile(binary, work):
            # callgrind's "0x..." for code without a symbol keeps its place; sorted, so that the
            # same functions give the same script.
            names = {n for n in executed(prof, binary) if VALID.fullmatch(n)} - seen
            seen |= names
            groups.append(sorted(names))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(seen) < 500:
        sys.exit(f"link-order: callgrind saw {len(seen)} functions of {binary}: is it stripped?")
    covered = len(seen & placed_by(script)) / len(seen)
    if covered >= 0.99:
        print(f"link-order: {script} places {covered:.1%} of the {len(seen)} functions the poll ran: kept",
              file=sys.stderr)
        return
    lines = [f"    *(.text.{n}) *(.text.unlikely.{n})" for group in groups for n in group]  # #[cold]: .unlikely.
    with open(script + ".new", "w") as f:
        f.write("/* packaging/link-order.py: the functions a no-op poll runs, then a first deploy's, then status's. */\n")
        f.write("SECTIONS {\n  .text.hot : {\n" + "\n".join(lines) + "\n  }\n} INSERT BEFORE .text;\n")
    os.replace(script + ".new", script)
    print(f"link-order: {script} written ({covered:.1%} placed before): {len(lines)} functions placed first",
          file=sys.stderr)


if __name__ == "__main__":
    main()
