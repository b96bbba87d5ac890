#!/bin/sh
# What decrypting secrets adds to an apply: a first deploy of a repository with 100 small age
# secrets for this host versus the same repository with 100 plain files of the same size, each
# applied ROUNDS times (interleaved) by the release binary; prints the median wall times and the
# difference. Issue 17's budget: at most 50 ms. Needs age and ssh-keygen.
#
#     just bench-secrets            (or: sh bench/secrets.sh [BINARY] [ROUNDS])
set -eu
binary=$(realpath "${1:-target/release/gitops}")
rounds=${2:-15}
work=$(mktemp -d)
shm=$(mktemp -d /dev/shm/gitops-bench.XXXXXX)
trap 'rm -rf "$work" "$shm"' EXIT
cd "$work"
ssh-keygen -q -t ed25519 -N "" -f hostkey
for kind in plain secret; do
    mkdir -p "$kind/s"
    git -C "$kind" init -q -b main
    printf '#!/bin/sh\ntrue\n' > "$kind/run.sh"
    chmod +x "$kind/run.sh"
    i=1
    while [ "$i" -le 100 ]; do
        if [ "$kind" = secret ]; then
            echo "value-$i-$(od -An -N8 -tx8 /dev/urandom | tr -d ' ')" | age -R hostkey.pub -o "$kind/s/k$i.age"
        else
            head -c 230 /dev/urandom > "$kind/s/k$i.bin"
        fi
        i=$((i + 1))
    done
    git -C "$kind" add -A
    git -C "$kind" -c user.name=b -c user.email=b@b commit -qm bench
done
run() {
    rm -rf state
    start=$(date +%s%N)
    code=0
    GITOPS_CONFIG=/dev/null "$binary" sync --repo-url "$work/$1" --state-dir "$work/state" --host bench \
        --age-identity "$work/hostkey" --secrets-dir "$shm" -q || code=$?
    end=$(date +%s%N)
    [ "$code" -eq 10 ] || { echo "gitops sync exited $code for $1" >&2; exit 1; }
    echo $(((end - start) / 1000))
}
: > plain.us
: > secret.us
n=1
while [ "$n" -le "$rounds" ]; do
    run plain >> plain.us
    run secret >> secret.us
    n=$((n + 1))
done
median() { sort -n "$1" | awk '{a[NR]=$1} END {print a[int((NR + 1) / 2)]}'; }
plain=$(median plain.us)
secret=$(median secret.us)
echo "first deploy, median of $rounds: 100 plain files $((plain / 1000)).$((plain % 1000 / 100)) ms, 100 secrets $((secret / 1000)).$((secret % 1000 / 100)) ms, secrets add $(((secret - plain) / 1000)) ms"
