#!/usr/bin/env bash
# dockless against buildah (issue 6): cold, no-change and one-file-change
# build+push of the same tree into one fresh local docker-registry, side by
# side in one run; prints medians, ratios, compressed sizes and dockless's
# peak RSS (from /usr/bin/time -v); for dockless also a cold `build` alone
# (no push, into an OCI layout), against which a cold build+push is set
# (issue 19: within 1.15x, the upload running while the layer compresses).
#
#   benches/compare-buildah.sh [RUNS]          # default 3 runs per scenario
#   TREE_MB=2048 benches/compare-buildah.sh --rss-only   # peak RSS on a big tree
#   benches/compare-buildah.sh --run [RUNS]    # the RUN scenario instead (below)
#   DOCKLESS_BIN=path       # time this dockless binary instead of building one
#   SANDBOX_BENCH=0         # --run: skip cargo bench --bench sandbox_start
#   DOCKLESS_BASELINE=path  # also time another dockless binary (e.g. the previous
#                           # commit's) in the same run, as "baseline"
#
# The tree is copies of the machine's Python standard library (/usr/lib/python3.*)
# up to TREE_MB (default 256) MB, as `COPY app /app` from scratch; without
# one, text-like files are generated. Needs buildah, docker-registry and
# /usr/bin/time (.ci/run installs them); builds dockless in release mode.
#
# The RUN scenario (issue 14) builds, without pushing, two Dockerfiles with
# COPYs and RUN steps: one FROM a busybox base (made here from
# busybox-static; one step writes 100 MB of files), one FROM the tests'
# Debian base (apt-get install from Debian's mirror, pip install of the
# python-service wheels, compileall). Both bases come from the fixtures
# `cargo test --test run_debian` keeps in $DOCKLESS_TEST_FIXTURES, pushed to
# the local registry. buildah runs `bud --storage-driver vfs --isolation
# chroot`, dockless `build -o oci:DIR`: cold (empty stores), cached (nothing
# changed) and one source file changed; then the sandbox's median start
# (`cargo bench --bench sandbox_start`) and dockless's peak RSS.
set -euo pipefail

MODE=copy
if [[ "${1:-}" == "--run" ]]; then MODE=run; shift; fi
RUNS=${1:-3}
RSS_ONLY=0
if [[ "${1:-}" == "--rss-only" ]]; then RSS_ONLY=1; RUNS=1; fi
TREE_MB=${TREE_MB:-256}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=benches/support/registry.sh
source "$ROOT/benches/support/registry.sh"
bench_work dockless-bench

for tool in /usr/bin/time python3; do
  command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done
if [[ $RSS_ONLY == 0 ]]; then
  for tool in buildah docker-registry; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
  done
fi

find_dockless
BASELINE=${DOCKLESS_BASELINE:-}
TOOLS="buildah dockless${BASELINE:+ baseline}"

# Runs a command under /usr/bin/time; prints "seconds maxrss_kb". The clock
# is bash's: a python3 started after the command to read it would count
# its own start-up (0.1-0.3 s on a loaded machine) as the command's time,
# which swamped a 0.05 s cached build.
timed() {
  local log="$WORK/time.log" t0 t1
  t0=$EPOCHREALTIME
  /usr/bin/time -v -o "$log" "$@" >"$WORK/cmd.out" 2>"$WORK/cmd.err" || {
    cat "$WORK/cmd.err" >&2; return 1; }
  t1=$EPOCHREALTIME
  local rss
  rss=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$log")
  python3 -c "print(f'{$t1 - $t0:.3f} $rss')"
}

if [[ $MODE == run ]]; then
  # shellcheck source=benches/compare-buildah-run.sh
  source "$ROOT/benches/compare-buildah-run.sh"
  exit 0
fi

# --- the tree -----------------------------------------------------------------
CTX="$WORK/ctx"
mkdir -p "$CTX/app"
PY=$(ls -d /usr/lib/python3.[0-9]* 2>/dev/null | sort -V | tail -1 || true)
copy=0
size_mb() { du -sm "$CTX/app" | cut -f1; }
if [[ -n "$PY" ]]; then
  while (( $(size_mb) < TREE_MB )); do
    cp -a "$PY" "$CTX/app/lib$copy"
    copy=$((copy + 1))
  done
  SOURCE="$copy copies of $PY"
else
  python3 - "$CTX/app" "$TREE_MB" <<'EOF'
import os, random, sys
root, mb = sys.argv[1], int(sys.argv[2])
rnd = random.Random(6)
words = ["def", "return", "self", "import", "class", "value", "for", "in", "if", "None", "(x)", ":\n    "]
total, i = 0, 0
while total < mb << 20:
    d = os.path.join(root, f"pkg{i % 97}")
    os.makedirs(d, exist_ok=True)
    body = " ".join(rnd.choice(words) for _ in range(rnd.randint(500, 9000))).encode()
    with open(os.path.join(d, f"m{i}.py"), "wb") as f:
        f.write(body)
    total += len(body); i += 1
EOF
  SOURCE="generated text files"
fi
printf 'FROM scratch\nCOPY app /app\nCMD ["/app/main"]\n' > "$CTX/Dockerfile"
FILES=$(find "$CTX/app" -type f | wc -l)
echo "tree: $(size_mb) MB, $FILES files ($SOURCE)" >&2
# The file the one-file scenario edits: one in the middle of the tree.
CHANGE=$(find "$CTX/app" -type f -name '*.py' | sort > "$WORK/py.list"; awk -v n="$(wc -l < "$WORK/py.list")" 'NR == int(n / 2) + 1 { print; exit }' "$WORK/py.list")

if [[ $RSS_ONLY == 1 ]]; then
  read -r secs rss < <(DOCKLESS_CACHE_DIR="$WORK/cache" timed "$DOCKLESS" build "$CTX" -t big:v1 -o "oci:$WORK/layout")
  echo "dockless cold build of $(size_mb) MB / $FILES files: ${secs}s, peak RSS $((rss / 1024)) MB"
  exit 0
fi

# --- a fresh registry ---------------------------------------------------------
start_registry

BUILDAH_ROOT="$WORK/buildah"
# Each run pushes to repositories of its own, so a cold run uploads everything.
buildah_cycle() { # run tag
  buildah --root "$BUILDAH_ROOT/root" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs \
    bud --isolation chroot --quiet -t "bh$1:$2" -f "$CTX/Dockerfile" "$CTX" >/dev/null &&
  buildah --root "$BUILDAH_ROOT/root" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs \
    push --quiet --tls-verify=false "bh$1:$2" "docker://$REG/bh$1:$2"
}
dockless_cycle() { # run tag
  DOCKLESS_CACHE_DIR="$WORK/dcache" "$DOCKLESS" push "$CTX" -t "$REG/dl$1:$2" --insecure -q
}
baseline_cycle() { # run tag
  DOCKLESS_CACHE_DIR="$WORK/bcache" "$BASELINE" push "$CTX" -t "$REG/bl$1:$2" --insecure -q
}
# A cold build alone (fresh cache, no registry), into an OCI layout.
build_only() { # binary
  rm -rf "$WORK/build-only"
  DOCKLESS_CACHE_DIR="$WORK/build-only/cache" "$1" build "$CTX" -t only:v1 -q \
    -o "oci:$WORK/build-only/layout"
}
export -f buildah_cycle dockless_cycle baseline_cycle build_only
export BUILDAH_ROOT CTX REG WORK DOCKLESS BASELINE

layers_size() { # repo tag: compressed size of the layers the registry holds
  python3 - "$REG" "$1" "$2" <<'EOF'
import json, sys, urllib.request
reg, repo, tag = sys.argv[1:]
req = urllib.request.Request(f"http://{reg}/v2/{repo}/manifests/{tag}", headers={"Accept": ",".join([
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json"])})
m = json.load(urllib.request.urlopen(req))
print(sum(l["size"] for l in m["layers"]))
EOF
}

declare -A T
RSS_MAX=0
record() { # tool scenario seconds rss
  T["$1.$2"]+="$3 "
  if [[ $1 == dockless ]] && (( $4 > RSS_MAX )); then RSS_MAX=$4; fi
}

ORIG="$WORK/orig-change"
cp "$CHANGE" "$ORIG"
for run in $(seq "$RUNS"); do
  tools=$TOOLS
  # The tool right after buildah finds a colder page cache: alternate the two dockless.
  if [[ -n "$BASELINE" ]] && (( run % 2 == 0 )); then tools="buildah baseline dockless"; fi
  for tool in $tools; do
    cp "$ORIG" "$CHANGE"
    rm -rf "$BUILDAH_ROOT" "$WORK/dcache" "$WORK/bcache"
    read -r s r < <(timed bash -c "${tool}_cycle $run c")
    record "$tool" cold "$s" "$r"
    if [[ $tool != buildah ]]; then
      bin=$DOCKLESS; [[ $tool == baseline ]] && bin=$BASELINE
      read -r s r < <(timed bash -c "build_only $bin")
      record "$tool" build "$s" "$r"
    fi
    read -r s r < <(timed bash -c "${tool}_cycle $run n")
    record "$tool" nochange "$s" "$r"
    printf '\n# changed in run %s\n' "$run" >> "$CHANGE"
    read -r s r < <(timed bash -c "${tool}_cycle $run o")
    record "$tool" onefile "$s" "$r"
    echo "run $run $tool: cold $(echo "${T[$tool.cold]}" | awk '{print $NF}')s," \
      "no-change $(echo "${T[$tool.nochange]}" | awk '{print $NF}')s," \
      "one-file $(echo "${T[$tool.onefile]}" | awk '{print $NF}')s" \
      "${T[$tool.build]:+(cold build alone $(echo "${T[$tool.build]}" | awk '{print $NF}')s)}" >&2
  done
done
cp "$ORIG" "$CHANGE"

DL_SIZE=$(layers_size dl1 c)
BH_SIZE=$(layers_size bh1 c)
python3 - "$RUNS" "$(size_mb)" "$FILES" "$DL_SIZE" "$BH_SIZE" "$RSS_MAX" \
  "${T[buildah.cold]}" "${T[buildah.nochange]}" "${T[buildah.onefile]}" \
  "${T[dockless.cold]}" "${T[dockless.nochange]}" "${T[dockless.onefile]}" "${T[dockless.build]}" <<'EOF'
import statistics, sys, os
runs, mb, files, dl_size, bh_size, rss = sys.argv[1:7]
vals = [list(map(float, v.split())) for v in sys.argv[7:14]]
med = [statistics.median(v) for v in vals]
names = ["cold", "no-change", "one-file change"]
targets = [4, 20, 10]
print(f"tree: {mb} MB, {files} files; {runs} runs each, median; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
print(f"{'scenario':<16} {'buildah':>9} {'dockless':>9} {'ratio':>7} {'target':>7}")
for i, n in enumerate(names):
    b, d = med[i], med[i + 3]
    print(f"{n:<16} {b:>8.2f}s {d:>8.3f}s {b / d:>6.1f}x {targets[i]:>6}x")
build = statistics.median(vals[6])
print(f"dockless cold build alone {build:.3f}s; cold build+push / build alone {med[3] / build:.2f}x (target <= 1.15)")
print(f"compressed layers: dockless {int(dl_size) / 1e6:.1f} MB, buildah {int(bh_size) / 1e6:.1f} MB, ratio {int(dl_size) / int(bh_size):.3f} (target <= 1.05)")
print(f"dockless peak RSS: {int(rss) / 1024:.0f} MB (target <= 256)")
EOF
if [[ -n "$BASELINE" ]]; then
  python3 - "${T[buildah.cold]}" "${T[buildah.nochange]}" "${T[buildah.onefile]}" \
    "${T[baseline.cold]}" "${T[baseline.nochange]}" "${T[baseline.onefile]}" \
    "${T[dockless.cold]}" "${T[dockless.nochange]}" "${T[dockless.onefile]}" \
    "${T[baseline.build]}" "${T[dockless.build]}" <<'EOF'
import statistics, sys
med = [statistics.median(map(float, v.split())) for v in sys.argv[1:12]]
print(f"{'scenario':<16} {'baseline':>9} {'dockless':>9} {'change':>7} {'baseline ratio':>15}")
print(f"{'cold build alone':<16} {med[9]:>8.3f}s {med[10]:>8.3f}s {(med[10] - med[9]) / med[9] * 100:>+6.1f}%")
print(f"{'push / build':<16} {med[3] / med[9]:>8.2f}x {med[6] / med[10]:>8.2f}x")
for i, n in enumerate(["cold", "no-change", "one-file change"]):
    b, old, new = med[i], med[i + 3], med[i + 6]
    print(f"{n:<16} {old:>8.3f}s {new:>8.3f}s {(new - old) / old * 100:>+6.1f}% {b / old:>14.1f}x")
EOF
fi
