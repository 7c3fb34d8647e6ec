#!/usr/bin/env bash
# Run the same registry as registry-compose.yml without Docker, using Debian's
# docker-registry binary (apt-get install docker-registry).
# Usage: scripts/run-registry.sh [PORT] [STORAGE_DIR] [CERT_DIR]
#   PORT defaults to 5000, STORAGE_DIR to a new temp dir, CERT_DIR to ./certs
#   (certificates are generated there when missing). Runs in the foreground.
#   Set PLAIN_HTTP=1 to serve without TLS.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
port="${1:-5000}"
storage="${2:-$(mktemp -d -t dockless-registry.XXXXXX)}"
certs="${3:-$root/certs}"
bin="${DOCKER_REGISTRY_BIN:-/usr/bin/docker-registry}"

[ -x "$bin" ] || { echo "missing $bin (apt-get install docker-registry)" >&2; exit 1; }
mkdir -p "$storage"

tls=""
if [ "${PLAIN_HTTP:-0}" != "1" ]; then
  [ -f "$certs/server.crt" ] || "$root/certs/generate.sh" "$certs"
  tls="  tls:
    certificate: $certs/server.crt
    key: $certs/server.key"
fi

config="$storage/config.yml"
cat > "$config" <<YML
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $storage/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
$tls
YML

echo "registry on 127.0.0.1:$port, storage $storage" >&2
exec "$bin" serve "$config"
