# Shell helpers the benches share (sourced): a work folder cleaned up on
# exit, a fresh docker-registry on loopback, and the busybox base pushed
# to it, and the dockless to time. They use the caller's ROOT, and set
# WORK, REG, REG_PID and DOCKLESS.

# $DOCKLESS_BIN, else dockless built in release mode; sets DOCKLESS.
find_dockless() {
  if [[ -n "${DOCKLESS_BIN:-}" ]]; then
    DOCKLESS=$DOCKLESS_BIN
  else
    echo "building dockless (release)..." >&2
    (cd "$ROOT" && cargo build --release --quiet --bin dockless)
    DOCKLESS="$ROOT/target/release/dockless"
  fi
}

# A work folder named after $1, removed with the registry on exit; sets WORK.
bench_work() {
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
  REG_PID=""
  trap bench_cleanup EXIT
}

bench_cleanup() {
  if [[ -n "$REG_PID" ]]; then kill "$REG_PID" 2>/dev/null || true; wait "$REG_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}

# A fresh docker-registry on loopback; sets REG.
start_registry() {
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  cat > "$WORK/registry.yml" <<EOF
version: 0.1
log:
  level: error
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $WORK/registry
http:
  addr: 127.0.0.1:$port
EOF
  docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  REG="127.0.0.1:$port"
}

# A busybox base from busybox-static (users root and app, /tmp) pushed
# as $REG/base/busybox:1.
push_busybox_base() {
  local bb="$WORK/busybox-base" applet
  mkdir -p "$bb/rootfs/bin" "$bb/rootfs/etc" "$bb/rootfs/tmp"
  cp "$(command -v busybox)" "$bb/rootfs/bin/busybox"
  for applet in $(busybox --list); do
    [[ $applet == busybox ]] || ln -s busybox "$bb/rootfs/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000:app:/home/app:/bin/sh\n' > "$bb/rootfs/etc/passwd"
  printf 'root:x:0:\napp:x:1000:\n' > "$bb/rootfs/etc/group"
  chmod 1777 "$bb/rootfs/tmp"
  tar -C "$bb/rootfs" -cf "$bb/rootfs.tar" .
  printf 'FROM scratch\nADD rootfs.tar /\nENV PATH=/bin\nCMD ["sh"]\n' > "$bb/Dockerfile"
  rm -rf "$bb/rootfs"
  DOCKLESS_CACHE_DIR="$WORK/base-cache" "$DOCKLESS" push "$bb" -t "$REG/base/busybox:1" --insecure -q >/dev/null
}
