#!/bin/sh
# Example entrypoint: reconcile this host with the files in the repository.
# It must be idempotent: gitops re-runs it after a failure or an interrupted run.
# TARGET_ROOT lets the demo run without root; on a real host it is unset (/).
# Every host installs files/; a host tagged web (gitops sync --tags web) also installs roles/web/files/.
set -eu
root="${TARGET_ROOT:-}"
echo "gitops applying ${GITOPS_COMMIT} on ${GITOPS_HOSTNAME} (previous: ${GITOPS_PREVIOUS_COMMIT:-none}, tags: ${GITOPS_TAGS:-none})"
echo "changed in this commit:"
sed 's/^/  /' "$GITOPS_CHANGED_FILES"
sources="files"
for tag in $(echo "${GITOPS_TAGS:-}" | tr ',' ' '); do
    if [ -d "roles/$tag/files" ]; then sources="$sources roles/$tag/files"; fi
done
for src in $sources; do
    (cd "$src" && find . -type f) | while read -r f; do
        dest="$root/${f#./}"
        if ! cmp -s "$src/$f" "$dest" 2>/dev/null; then
            mkdir -p "$(dirname "$dest")"
            cp "$src/$f" "$dest"
            echo "installed $dest"
        fi
    done
done
