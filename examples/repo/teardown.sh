#!/bin/sh
# Example teardown: gitops runs it in the OUTGOING revision before the next one goes live, with
# GITOPS_NEXT_COMMIT and GITOPS_NEXT_DIR (the next revision's checkout). run.sh reconciles (installs what
# the repository has); teardown.sh undoes what this revision installed and the next one no longer has.
# If it fails, the next revision is not applied and this one stays live (exit 30, retried).
set -eu
root="${TARGET_ROOT:-}"
sources="files"
for tag in $(echo "${GITOPS_TAGS:-}" | tr ',' ' '); do
    if [ -d "roles/$tag/files" ]; then sources="$sources roles/$tag/files"; fi
done
for src in $sources; do
    (cd "$src" && find . -type f) | while read -r f; do
        if [ ! -e "$GITOPS_NEXT_DIR/$src/$f" ] && [ -e "$root/${f#./}" ]; then
            rm -f "$root/${f#./}"
            echo "removed $root/${f#./}: gone in ${GITOPS_NEXT_COMMIT}"
        fi
    done
done
