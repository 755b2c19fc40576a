#!/usr/bin/env bash
# What security costs: GetCustomerPersona throughput of a release build of
# segmentd on one core (the load generator on the other), first plaintext
# and anonymous, then over TLS with a bearer token checked on every call,
# then over mTLS with the client certificate's identity as the caller. The
# rounds alternate, three of each, on the same synthetic data set, so that
# the machine's drift falls on every mode alike.
#
# Usage: bash bench/security.sh      (CUSTOMERS=... PURCHASES=... to resize)
set -euo pipefail
cd "$(dirname "$0")/.."

customers=${CUSTOMERS:-200000}
purchases=${PURCHASES:-2000000}
cargo build --release --locked --bin segmentd --example load
work=$(mktemp -d)
addr=127.0.0.1:${SEGMENTD_BENCH_PORT:-50161}
health=127.0.0.1:$(( ${SEGMENTD_BENCH_PORT:-50161} + 1 ))
server=
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

# A throwaway CA, a server certificate for 127.0.0.1, and a client one.
cd "$work"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
  -subj /CN=bench-ca -keyout ca.key -out ca.pem 2>/dev/null
for who in server client; do
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/CN=$who" -keyout "$who.key" -out "$who.csr" 2>/dev/null
done
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext
printf 'subjectAltName=URI:spiffe://bench/client\nextendedKeyUsage=clientAuth\n' >client.ext
for who in server client; do
  openssl x509 -req -in "$who.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
    -extfile "$who.ext" -out "$who.pem" 2>/dev/null
done
token=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
hash=$(printf %s "$token" | sha256sum | cut -d' ' -f1)
scopes='["customers.read", "personas.read"]'
cat >access.json <<JSON
{"tokens": [{"principal": "bench", "sha256": "$hash", "scopes": $scopes}],
 "certificates": [{"identity": "spiffe://bench/client", "scopes": $scopes}]}
JSON
cd - >/dev/null

segmentd=./target/release/segmentd
start_server() { # pin flags...
  local pin=$1
  shift
  $pin "$segmentd" serve --listen "$addr" --health-listen "$health" --data-dir "$work/db" \
    --log-format json "$@" >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1200); do
    if "$segmentd" healthcheck --addr "$health" >/dev/null 2>&1; then
      return
    fi
    sleep 0.05
  done
  echo "server did not start" >&2
  exit 1
}
stop_server() {
  kill -TERM "$server"
  wait "$server"
  server=
}
persona() { # load flags...
  taskset -c 1 ./target/release/examples/load --addr "$addr" "$@" persona \
    --requests 200000 --connections 4 --concurrency 128 --customers "$customers"
}

start_server ""
./target/release/examples/load --addr "$addr" dataset --customers "$customers" --purchases "$purchases" >/dev/null
stop_server

tls=(--tls-cert "$work/server.pem" --tls-key "$work/server.key")
echo "| GetCustomerPersona, server on one core | throughput | latency |"
echo "|---|---|---|"
for _ in 1 2 3; do
  start_server "taskset -c 0"
  printf '| plaintext, anonymous: '
  persona | cut -c3-
  stop_server

  start_server "taskset -c 0" "${tls[@]}" --auth-tokens "$work/access.json"
  printf '| TLS, bearer token: '
  SEGMENTD_TOKEN=$token persona --tls-ca "$work/ca.pem" | cut -c3-
  stop_server

  start_server "taskset -c 0" "${tls[@]}" --tls-client-ca "$work/ca.pem" --auth-tokens "$work/access.json"
  printf '| mTLS, certificate identity: '
  persona --tls-ca "$work/ca.pem" --tls-cert "$work/client.pem" --tls-key "$work/client.key" | cut -c3-
  stop_server
done
