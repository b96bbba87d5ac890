#!/bin/sh
# Example entrypoint: reconcile this host with the files in the repository.
# It must be idempotent: gitops re-runs it after a failure or an interrupted run.
# TARGET_ROOT lets the demo run without root; on a real host it is unset (/).
set -eu
root="${TARGET_ROOT:-}"
echo "gitops applying ${GITOPS_COMMIT} on ${GITOPS_HOSTNAME} (previous: ${GITOPS_PREVIOUS_COMMIT:-none})"
echo "changed in this commit:"
sed 's/^/  /' "$GITOPS_CHANGED_FILES"
cd files
find . -type f | while read -r f; do
    dest="$root/${f#./}"
    if ! cmp -s "$f" "$dest" 2>/dev/null; then
        mkdir -p "$(dirname "$dest")"
        cp "$f" "$dest"
        echo "installed $dest"
    fi
done
