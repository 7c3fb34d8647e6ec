#!/usr/bin/env bash
# Create a development CA and a server certificate for localhost/127.0.0.1.
# Usage: certs/generate.sh [OUT_DIR]   (default: the directory of this script)
# Outputs: ca.crt ca.key server.crt server.key (keys are never committed).
set -euo pipefail

out="${1:-$(cd "$(dirname "$0")" && pwd)}"
days="${CERT_DAYS:-30}"
mkdir -p "$out"
cd "$out"

# P-256 keys: quick to generate, accepted by Go's TLS stack and by rustls.
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days "$days" \
  -subj "/CN=dockless dev CA $(date +%s)-$RANDOM" \
  -addext "basicConstraints=critical,CA:TRUE" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -out ca.crt

openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr

# Extensions in a file: `openssl x509 -req` ignores -addext on old versions.
cat > server.ext <<'EXT'
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1
EXT
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial \
  -days "$days" -sha256 -extfile server.ext -out server.crt 2>/dev/null

rm -f server.csr server.ext ca.srl
chmod 600 ca.key server.key
echo "wrote $out/{ca.crt,ca.key,server.crt,server.key}"
