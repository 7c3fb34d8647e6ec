#!/usr/bin/env bash
# The registry build cache (issue 17): a rebuild of an unchanged repository
# on a fresh cache folder ("a new replica" or CI runner), with and without
# --cache-repo. Prints both times and the ratio.
#
#   benches/registry-cache.sh [RUNS]     # default 3 runs of each, medians
#   DOCKLESS_BIN=path                    # time this binary instead of building one
#   EXTRA_FLAGS="--sbom=false"           # more flags for every push
#
# One docker-registry on loopback holds the busybox base (made here from
# busybox-static), the target repositories and the cache. The Dockerfile
# has three COPYs and three RUN steps; the first RUN writes 64 MiB of text
# (slow to compress) and 16 MiB of random bytes. First a push with
# --cache-repo fills the cache; then each run pushes the same context to a
# new repository from an empty cache folder, once without and once with
# --cache-repo. Needs docker-registry, busybox (busybox-static), python3;
# builds dockless in release mode.
set -euo pipefail

RUNS=${1:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/support/registry.sh
source "$ROOT/benches/support/registry.sh"
bench_work dockless-regcache

for tool in docker-registry busybox python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
find_dockless
read -r -a EXTRA <<< "${EXTRA_FLAGS:-}"

start_registry
push_busybox_base

# The repository.
CTX="$WORK/ctx"
mkdir -p "$CTX/config" "$CTX/lib" "$CTX/src"
for i in $(seq 20); do printf 'key%s = value\n' "$i" > "$CTX/config/app$i.conf"; done
for i in $(seq 300); do seq "$i" 3000 > "$CTX/lib/module$i.txt"; done
for i in $(seq 40); do seq "$i" 2000 | sed 's/^/# line /' > "$CTX/src/part$i.sh"; done
cat > "$CTX/Dockerfile" <<EOF
FROM $REG/base/busybox:1
COPY config/ /etc/app/
RUN mkdir -p /opt/data && i=0 && while [ \$i -lt 16 ]; do \\
      head -c 1048576 /dev/urandom > /opt/data/random\$i; \\
      seq \$((i * 1000000)) \$((i * 1000000 + 560000)) > /opt/data/text\$i; \\
      i=\$((i + 1)); done
COPY lib/ /opt/lib/
RUN find /opt/lib -type f | wc -l > /opt/lib.count
COPY src/ /src/
RUN cat /src/*.sh > /app.sh && chmod 755 /app.sh
EOF

push() { # cache-dir repo [flags...]
  local cache=$1 repo=$2
  shift 2
  DOCKLESS_CACHE_DIR="$cache" "$DOCKLESS" push "$CTX" -t "$REG/$repo:1" --insecure -q \
    "${EXTRA[@]}" "$@" >/dev/null 2>"$WORK/push.err" || { cat "$WORK/push.err" >&2; exit 1; }
}
# The clock is bash's: a process started to read it would count its own start-up.
timed() { # cache-dir repo [flags...]
  local t0 t1
  t0=$EPOCHREALTIME
  push "$@"
  t1=$EPOCHREALTIME
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}
median() { python3 -c 'import sys, statistics; print(f"{statistics.median(map(float, sys.argv[1:])):.3f}")' "$@"; }

echo "filling the cache (replica A)..." >&2
push "$WORK/replica-a" warm --cache-repo "$REG/cache"

without=() with=()
for run in $(seq "$RUNS"); do
  without+=("$(timed "$WORK/fresh-$run-without" "without-$run")")
  with+=("$(timed "$WORK/fresh-$run-with" "with-$run" --cache-repo "$REG/cache")")
  echo "run $run: without ${without[-1]} s, with ${with[-1]} s" >&2
done
w=$(median "${without[@]}")
c=$(median "${with[@]}")
echo "fresh cache folder, unchanged repository, push (median of $RUNS):"
echo "  without --cache-repo: $w s"
echo "  with --cache-repo:    $c s"
python3 -c "print(f'  ratio:                {$w / $c:.1f}x')"
