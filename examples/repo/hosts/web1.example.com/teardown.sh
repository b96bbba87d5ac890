#!/bin/sh
# The teardown next to this host's entrypoint: the shared one (the canary file stays, run.sh rewrites it).
exec ./teardown.sh
