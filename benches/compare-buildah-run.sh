# The RUN scenario of benches/compare-buildah.sh (`--run [RUNS]`), sourced
# by it: uses its WORK, ROOT, RUNS, DOCKLESS, timed, and start_registry and
# push_busybox_base (benches/support/registry.sh).

FIXTURES=${DOCKLESS_TEST_FIXTURES:-$HOME/.cache/dockless-test-fixtures}
ARCH=$(dpkg --print-architecture)
# The newest kept Debian base and python-service wheels (tests/common/debian.rs).
DEBIAN_LAYOUT=$(ls -dt "$FIXTURES"/debian-bookworm-"$ARCH"-*/layout 2>/dev/null | head -1 || true)
WHEELS=$(ls -dt "$FIXTURES"/python-service-wheels-* 2>/dev/null | grep -v '\.lock$' | head -1 || true)
if [[ -z "$DEBIAN_LAYOUT" || -z "$WHEELS" ]]; then
  echo "no Debian base or wheels under $FIXTURES: run 'cargo test --test run_debian' once" >&2
  exit 1
fi
command -v busybox >/dev/null || { echo "missing busybox (busybox-static)" >&2; exit 1; }

start_registry

# --- the bases, pushed to the local registry ----------------------------------
push_busybox_base
DOCKLESS_CACHE_DIR="$WORK/base-cache" "$DOCKLESS" push "oci:$DEBIAN_LAYOUT:base/debian:bookworm" \
  -t "$REG/base/debian:bookworm" --insecure -q >/dev/null

# --- the contexts -------------------------------------------------------------
# Source files the last COPY brings; the one-file scenario edits one.
make_src() { # dir
  mkdir -p "$1"
  for i in $(seq 40); do
    printf 'echo part %s\n' "$i" > "$1/part$i.sh"
    seq "$i" 2000 | sed 's/^/# line /' >> "$1/part$i.sh"
  done
}

CTX_BB="$WORK/ctx-busybox"
mkdir -p "$CTX_BB/config" "$CTX_BB/lib"
make_src "$CTX_BB/src"
for i in $(seq 20); do printf 'key%s = value\n' "$i" > "$CTX_BB/config/app$i.conf"; done
for i in $(seq 300); do seq "$i" 3000 > "$CTX_BB/lib/module$i.txt"; done
cat > "$CTX_BB/Dockerfile" <<EOF
FROM $REG/base/busybox:1
COPY config/ /etc/app/
RUN mkdir -p /opt/data && i=0 && while [ \$i -lt 50 ]; do \\
      head -c 1048576 /dev/urandom > /opt/data/random\$i; \\
      seq \$((i * 100000)) \$((i * 100000 + 140000)) > /opt/data/text\$i; \\
      i=\$((i + 1)); done && du -sm /opt/data
COPY lib/ /opt/lib/
RUN find /opt/lib -type f | wc -l > /opt/lib.count && mkdir -p /var/log/app && chown 1000:1000 /var/log/app
COPY src/ /src/
RUN cat /src/*.sh > /app.sh && chmod 755 /app.sh && sh /app.sh > /app.out
RUN rm -f /opt/data/random0 && mkdir -p /usr/local/bin && ln -s /app.sh /usr/local/bin/app
CMD ["/app.sh"]
EOF

CTX_DEB="$WORK/ctx-debian"
mkdir -p "$CTX_DEB"
cp -a "$WHEELS" "$CTX_DEB/wheels"
cp "$ROOT/testdata/python-service/requirements.txt" "$CTX_DEB/"
make_src "$CTX_DEB/src"
for f in "$CTX_DEB"/src/*.sh; do sed 's/^echo \(.*\)/print("\1")/' "$f" > "${f%.sh}.py"; rm "$f"; done
cat > "$CTX_DEB/Dockerfile" <<EOF
FROM $REG/base/debian:bookworm
RUN apt-get update && apt-get install -y --no-install-recommends hello && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY requirements.txt wheels/ /app/
RUN pip install --no-cache-dir --no-index --find-links /app -r requirements.txt
COPY src/ /app/src/
RUN python -m compileall -q /app/src && useradd --uid 1000 app && chown -R app /app/src
CMD ["hello"]
EOF

# --- the cycles ---------------------------------------------------------------
# buildah with --layers: its step cache, as docker build caches by default.
BUILDAH_ROOT="$WORK/buildah"
buildah_build() { # ctx tag
  buildah --root "$BUILDAH_ROOT/root" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs \
    bud --isolation chroot --layers --tls-verify=false --quiet -t "$2" "$1" >/dev/null
}
dockless_build() { # ctx tag
  DOCKLESS_CACHE_DIR="$WORK/dcache" "$DOCKLESS" build "$1" -t "$2" \
    --insecure-registry "$REG" -o "oci:$WORK/layout"
}
export -f buildah_build dockless_build
export BUILDAH_ROOT REG WORK DOCKLESS

declare -A T
RSS_MAX=0
declare -A CTXS=([busybox]="$CTX_BB" [debian]="$CTX_DEB")
declare -A CHANGES=([busybox]="$CTX_BB/src/part20.sh" [debian]="$CTX_DEB/src/part20.py")
for run in $(seq "$RUNS"); do
  for base in busybox debian; do
    ctx=${CTXS[$base]}
    change=${CHANGES[$base]}
    cp "$change" "$WORK/orig-change"
    for tool in buildah dockless; do
      cp "$WORK/orig-change" "$change"
      rm -rf "$BUILDAH_ROOT" "$WORK/dcache" "$WORK/layout"
      for scenario in cold cached onefile; do
        if [[ $scenario == onefile ]]; then printf '\n# changed in run %s\n' "$run" >> "$change"; fi
        read -r s r < <(timed bash -c "${tool}_build '$ctx' 'run-$base:$scenario'")
        T["$base.$tool.$scenario"]+="$s "
        if [[ $tool == dockless ]] && (( r > RSS_MAX )); then RSS_MAX=$r; fi
      done
      echo "run $run $base $tool: cold $(echo "${T[$base.$tool.cold]}" | awk '{print $NF}')s," \
        "cached $(echo "${T[$base.$tool.cached]}" | awk '{print $NF}')s," \
        "one-file $(echo "${T[$base.$tool.onefile]}" | awk '{print $NF}')s" >&2
    done
    cp "$WORK/orig-change" "$change"
  done
done

SANDBOX="not measured (SANDBOX_BENCH=0)"
if [[ ${SANDBOX_BENCH:-1} != 0 ]]; then
  echo "sandbox start (cargo bench --bench sandbox_start)..." >&2
  SANDBOX=$(cd "$ROOT" && cargo bench --quiet --bench sandbox_start 2>/dev/null | grep 'network Host' || echo "sandbox_start failed")
fi

args=()
for base in busybox debian; do
  for tool in buildah dockless; do
    for scenario in cold cached onefile; do args+=("${T[$base.$tool.$scenario]}"); done
  done
done
python3 - "$RUNS" "$RSS_MAX" "$SANDBOX" "${args[@]}" <<'EOF'
import os, statistics, sys
runs, rss, sandbox = sys.argv[1:4]
vals = [statistics.median(map(float, v.split())) for v in sys.argv[4:]]
targets = {"cold": "2x", "cached": "20x", "onefile": ""}
print(f"RUN scenario: {runs} runs each, median; {os.cpu_count()} cores; load {os.getloadavg()[0]:.2f}")
print(f"{'base':<8} {'scenario':<10} {'buildah':>9} {'dockless':>9} {'ratio':>7} {'target':>7}")
i = 0
for base in ["busybox", "debian"]:
    b, d = vals[i:i + 3], vals[i + 3:i + 6]
    for j, n in enumerate(["cold", "cached", "onefile"]):
        print(f"{base:<8} {n:<10} {b[j]:>8.2f}s {d[j]:>8.2f}s {b[j] / d[j]:>6.1f}x {targets[n]:>7}")
    i += 6
print(f"dockless peak RSS: {int(rss) / 1024:.0f} MB")
print(f"sandbox: {sandbox.strip()} (target: median < 50 ms)")
EOF
