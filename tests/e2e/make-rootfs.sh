#!/bin/sh
# Build a cached Debian rootfs that the tests boot with systemd-nspawn: bookworm for
# tests/e2e_systemd.rs, bullseye (Debian 11, glibc 2.31) for the release binary in tests/dist.rs.
#
# usage: make-rootfs.sh DIR [SUITE]   (SUITE: bookworm (default) or bullseye; DIR must not
#                               exist; built in DIR.tmp.$$ and renamed, so a half-built tree
#                               never has DIR's name)
# The test names DIR after a hash of this file: editing it rebuilds the cache.
# Needs root, debootstrap and the Debian mirror apt already uses.
set -eu

dest=${1:?usage: make-rootfs.sh DIR [SUITE]}
suite=${2:-bookworm}
[ "$(id -u)" = 0 ] || { echo "make-rootfs.sh: must run as root (debootstrap)" >&2; exit 1; }
[ ! -e "$dest" ] || { echo "make-rootfs.sh: $dest exists; remove it to rebuild" >&2; exit 1; }

# Use the mirror apt is configured with, so this works wherever `apt-get install` does.
mirror=$(grep -hsE '^(URIs:|deb) ' /etc/apt/sources.list /etc/apt/sources.list.d/*.sources \
    /etc/apt/sources.list.d/*.list 2>/dev/null | grep -m1 -E 'debian/?$|debian ' \
    | sed -E 's/^URIs: *//; s/^deb (\[[^]]*\] )?//; s/ .*//')
mirror=${mirror:-http://deb.debian.org/debian}

tmp="$dest.tmp.$$"
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$(dirname "$dest")"
# systemd + dbus: a real PID 1; git: gix runs `git upload-pack` for local repositories;
# libssl3 (bookworm): gitops's libcurl uses OpenSSL.
case "$suite" in
    bookworm) include=systemd,systemd-sysv,dbus,git,libssl3 ;;
    bullseye) include=systemd,systemd-sysv,dbus,git ;;
    *) echo "make-rootfs.sh: SUITE is bookworm or bullseye, not $suite" >&2; exit 2 ;;
esac
debootstrap --variant=minbase --include="$include" \
    "$suite" "$tmp" "$mirror" >"$tmp.log" 2>&1 || { cat "$tmp.log" >&2; rm -f "$tmp.log"; exit 1; }
rm -f "$tmp.log"

# Persistent journal, readable from the host with `journalctl -D ROOT/var/log/journal`.
mkdir -p "$tmp/var/log/journal"
# Quiet boots: no apt/e2scrub/dpkg timers, no getty on the container's console.
for unit in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer dpkg-db-backup.timer \
    console-getty.service; do
    ln -sf /dev/null "$tmp/etc/systemd/system/$unit"
done
# An empty machine-id is filled at boot; keep the cache small.
: >"$tmp/etc/machine-id"
rm -rf "$tmp"/var/cache/apt/archives/*.deb "$tmp"/var/lib/apt/lists/* \
    "$tmp"/usr/share/doc/* "$tmp"/usr/share/man/* "$tmp"/usr/share/locale/*
mv "$tmp" "$dest"
trap - EXIT
