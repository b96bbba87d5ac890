#!/bin/sh
# Install gitops from this release directory the way the .deb and .rpm do:
#   /usr/bin/gitops, the units in /usr/lib/systemd/system/, /etc/gitops/gitops.env (0600, kept
#   if it exists), man pages, bash/zsh/fish completions, README and licenses in
#   /usr/share/doc/gitops/ with the cron and OpenRC files as examples.
# Nothing is enabled or started: configure /etc/gitops/gitops.env, then
#   systemctl enable --now gitops.timer
#
# usage: ./install.sh [--root DIR]    (DIR: an image or chroot being built; default /)
set -eu

root=/
while [ $# -gt 0 ]; do
    case "$1" in
        --root) root=${2:?--root needs a directory}; shift 2 ;;
        --root=*) root=${1#--root=}; shift ;;
        -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument $1; usage: ./install.sh [--root DIR]" >&2; exit 2 ;;
    esac
done
here=$(cd "$(dirname "$0")" && pwd)
if [ ! -d "$root" ]; then
    echo "install.sh: --root $root is not a directory; pass the root of the system to install into" >&2
    exit 2
fi
root=$(cd "$root" && pwd)
[ "$root" != / ] || root=
if [ -z "$root" ] && [ "$(id -u)" != 0 ]; then
    echo "install.sh: installs into /usr and /etc, so it needs root: sudo ./install.sh" >&2
    exit 2
fi

# put MODE SOURCE DEST: install one file, creating its directory (0755).
put() {
    install -d -m 0755 "$root$(dirname "$3")"
    install -m "$1" "$here/$2" "$root$3"
}

put 0755 gitops /usr/bin/gitops
for unit in "$here"/systemd/gitops*; do
    put 0644 "systemd/${unit##*/}" "/usr/lib/systemd/system/${unit##*/}"
done
for page in "$here"/man/*.1; do
    put 0644 "man/${page##*/}" "/usr/share/man/man1/${page##*/}"
done
put 0644 completions/gitops.bash /usr/share/bash-completion/completions/gitops
# Debian's zsh reads vendor-completions/, everyone else's site-functions/.
if [ -d "$root/usr/share/zsh/vendor-completions" ]; then
    put 0644 completions/_gitops /usr/share/zsh/vendor-completions/_gitops
else
    put 0644 completions/_gitops /usr/share/zsh/site-functions/_gitops
fi
put 0644 completions/gitops.fish /usr/share/fish/vendor_completions.d/gitops.fish
for doc in README.md LICENSE-MIT LICENSE-APACHE; do
    put 0644 "$doc" "/usr/share/doc/gitops/$doc"
done
put 0644 contrib/cron/gitops /usr/share/doc/gitops/examples/cron.d/gitops
put 0644 contrib/openrc/gitops /usr/share/doc/gitops/examples/openrc/gitops

# The configuration: root-only, and never overwritten (an upgrade keeps the operator's edits).
install -d -m 0700 "$root/etc/gitops"
chmod 0700 "$root/etc/gitops"
if [ -e "$root/etc/gitops/gitops.env" ]; then
    echo "install.sh: kept $root/etc/gitops/gitops.env"
else
    install -m 0600 "$here/gitops.env" "$root/etc/gitops/gitops.env"
fi

# systemd 247 to 249 (Debian 11, Ubuntu 22.04) fail the service at start (243/CREDENTIALS) when
# a LoadCredential= file is missing; gitops.service counts on 250's behaviour, which skips it
# (before 247 the setting is unknown and ignored). There a drop-in clears them: name secrets
# by path in gitops.env instead (GITOPS_SSH_KEY=…). The version is read from the root's
# libsystemd-shared-VERSION.so, so this works for --root too.
compat=/usr/lib/systemd/system/gitops.service.d/credentials-need-systemd-250.conf
systemd_version=
for lib in "$root"/usr/lib/systemd/libsystemd-shared-*.so "$root"/lib/systemd/libsystemd-shared-*.so; do
    [ -e "$lib" ] || continue
    systemd_version=${lib##*/libsystemd-shared-}
    systemd_version=${systemd_version%%[!0-9]*}
done
if [ -n "$systemd_version" ] && [ "$systemd_version" -ge 247 ] && [ "$systemd_version" -le 249 ]; then
    install -d -m 0755 "$root$(dirname "$compat")"
    printf '%s\n' "# Written by gitops's install.sh: systemd $systemd_version fails a unit whose" \
        "# LoadCredential= file is missing (250 skips it). Name secrets by path in" \
        "# /etc/gitops/gitops.env instead (GITOPS_SSH_KEY=...)." "[Service]" "LoadCredential=" \
        >"$root$compat"
    chmod 0644 "$root$compat"
    echo "install.sh: systemd $systemd_version: wrote $root$compat (credentials by path in gitops.env)"
elif [ -e "$root$compat" ]; then
    rm -f "$root$compat"
    rmdir "$root$(dirname "$compat")" 2>/dev/null || true
fi

# A running systemd picks up new or changed units; an image being built has none.
if [ -z "$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
fi
echo "install.sh: installed $("$root/usr/bin/gitops" --version 2>/dev/null || echo gitops) into ${root:-/}"
echo "install.sh: next, set GITOPS_REPO_URL and friends in $root/etc/gitops/gitops.env, then: systemctl enable --now gitops.timer"
