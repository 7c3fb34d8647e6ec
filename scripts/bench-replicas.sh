#!/usr/bin/env bash
# Acknowledgement and build-start latency of `dockless serve` on SQLite, and
# on PostgreSQL with 1 and with 3 replicas (examples/webhook_load.rs), on
# this machine.
# Needs Debian's postgresql package and a release build:
#   cargo build --release --bin dockless --example webhook_load
#   scripts/bench-replicas.sh [REQUESTS] [CONCURRENCY]
# Builds fail fast on purpose (their commits do not exist): the figures are
# the service's own (queue, wake-up), not a build's.
set -euo pipefail
cd "$(dirname "$0")/.."
requests="${1:-500}"
concurrency="${2:-50}"
profile="${DOCKLESS_BENCH_PROFILE:-release}"
target="${CARGO_TARGET_DIR:-target}"
bin=$target/$profile/dockless
load=$target/$profile/examples/webhook_load
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
work=$(mktemp -d /tmp/dockless-bench.XXXXXX)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  as_pg "$pgbin/pg_ctl" -D "$work/pg" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
# PostgreSQL refuses to run as root.
as_pg() { if [ "$(id -u)" = 0 ]; then setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; else "$@"; fi; }
chmod 755 "$work"
[ "$(id -u)" = 0 ] && chown nobody "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$pgbin/initdb" -D "$work/pg" -U dockless -A trust --no-locale -E UTF8 --no-sync >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/pg" -l "$work/pg.log" -o "-p $port -h 127.0.0.1 -k $work -c max_connections=200" -w start >/dev/null

git init -q -b develop "$work/repo"
git -C "$work/repo" -c user.name=b -c user.email=b@b commit -q --allow-empty -m init
export DOCKLESS_WEBHOOK_SECRET=bench-secret

run() { # NAME REPLICAS [sqlite]
  local db=$1 n=$2 store=${3:-postgres} addrs=() url=""
  if [ "$store" = postgres ]; then
    as_pg "$pgbin/createdb" -h "$work" -p "$port" -U dockless "$db"
    url="database_url = \"postgres://dockless@127.0.0.1:$port/$db?sslmode=disable\""
  fi
  for i in $(seq 1 "$n"); do
    local p=$((port + 10 * i)) d="$work/$db-$i"
    mkdir -p "$d"
    cat > "$d/dockless.toml" <<TOML
listen = "127.0.0.1:$p"
registry = "127.0.0.1:9"
state_dir = "$d/state"
max_concurrent_builds = 2
$url
replica_name = "r$i"
[[repos]]
full_name = "acme/shop"
clone_url = "file://$work/repo"
TOML
    "$bin" serve --config "$d/dockless.toml" 2>"$d/serve.log" &
    pids+=($!)
    addrs+=("127.0.0.1:$p")
  done
  local list
  list=$(IFS=,; echo "${addrs[*]}")
  for a in "${addrs[@]}"; do
    until curl -sf "http://$a/healthz" >/dev/null; do sleep 0.1; done
  done
  echo "== $n replica(s) on $store"
  "$load" "$list" --requests "$requests" --concurrency "$concurrency" --distinct-commits --start-of 20
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  pids=()
}
run sqlite 1 sqlite
run one 1
run three 3
