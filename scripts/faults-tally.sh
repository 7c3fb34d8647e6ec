#!/usr/bin/env bash
# Runs the fault suites with DOCKLESS_FAULTS_TALLY set and sums what the fault
# proxy and the tests appended: faults by kind, and pushes completed/failed.
# The README's "Reliability" figures come from this.
#   scripts/faults-tally.sh [cargo test args...]
set -euo pipefail
cd "$(dirname "$0")/.."
tally=$(mktemp -t dockless-faults.XXXXXX)
trap 'rm -f "$tally"' EXIT
suites=(faults_push faults_quirks faults_pull registry_push_chunked_proxy)
args=()
for s in "${suites[@]}"; do args+=(--test "$s"); done
DOCKLESS_FAULTS_TALLY="$tally" cargo test "${args[@]}" "$@" >&2
# key=N tokens are summed per key; anything else is shown as written.
awk '{
    for (i = 1; i <= NF; i++) {
        parts = split($i, kv, "=")
        if (parts == 2 && kv[2] ~ /^[0-9]+$/) sum[kv[1]] += kv[2]
        else if (parts == 2) sum[$i] += 1
        else other[NR] = $0
    }
} END {
    for (k in sum) printf "%s\t%d\n", k, sum[k]
    for (n in other) print other[n]
}' "$tally" | sort
