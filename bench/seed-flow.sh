#!/bin/sh
# The seed's deploy loop, the baseline of `just bench`: clone and run on first use; afterwards
# fetch, compare LOCAL/REMOTE/BASE, and pull and run when behind.
# Usage: seed-flow.sh URL DIR. Exit 0 up-to-date or applied, 20 need-push, 21 diverged.
set -e
url=$1
dir=$2
if [ ! -d "$dir/.git" ]; then
    git clone -q "$url" "$dir"
    cd "$dir"
    exec ./run.sh
fi
cd "$dir"
git fetch -q
LOCAL=$(git rev-parse @)
REMOTE=$(git rev-parse '@{u}')
BASE=$(git merge-base @ '@{u}')
if [ "$LOCAL" = "$REMOTE" ]; then
    exit 0
elif [ "$LOCAL" = "$BASE" ]; then
    git pull -q
    exec ./run.sh
elif [ "$REMOTE" = "$BASE" ]; then
    echo "need to push" >&2
    exit 20
else
    echo "diverged" >&2
    exit 21
fi
