#!/bin/sh
# Host override: on web1.example.com gitops runs this instead of the shared run.sh (it looks for
# hosts/<fqdn>/run.sh, then hosts/<short name>/run.sh, then run.sh). Like every entrypoint it runs in
# the config root, so the shared one is ./run.sh: do what is special to this host, then the shared work.
set -eu
root="${TARGET_ROOT:-}"
mkdir -p "$root/etc"
echo "web1: canary for the web role" > "$root/etc/canary"
exec ./run.sh
