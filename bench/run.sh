#!/usr/bin/env bash
# Benchmarks a release build of segmentd on this machine: starts the server
# on a fresh data directory on loopback, runs the load generator
# (examples/load.rs) against it, and stops the server; once with durable
# acknowledgements (the default) and once relaxed.
#
# Usage: bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin segmentd --example load
work=$(mktemp -d)
addr=127.0.0.1:${SEGMENTD_BENCH_PORT:-50151}
server=
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

start_server() { # durability
  rm -rf "$work/db"
  ./target/release/segmentd serve --listen "$addr" --data-dir "$work/db" \
    --durability "$1" --log-format json >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 100); do
    ./target/release/segmentd healthcheck --addr "$addr" >/dev/null 2>&1 && return
    sleep 0.1
  done
  echo "server did not start" >&2
  exit 1
}

stop_server() {
  kill -TERM "$server"
  wait "$server"
  server=
}

load() { ./target/release/examples/load --addr "$addr" "$@"; }

echo "| durability | run | throughput | latency or time |"
echo "|---|---|---|---|"
for durability in durable relaxed; do
  start_server "$durability"
  printf '| %s ' "$durability"; load create --requests 50000 --connections 4 --concurrency 64
  printf '| %s ' "$durability"; load create --requests 5000 --connections 1 --concurrency 1 --first 100000
  printf '| %s ' "$durability"; load import --customers 200000 --batch 1000
  printf '| %s ' "$durability"; load activity --customers 200000 --purchases 2000000 --batch 10000
  size=$(du -sk "$work/db" | cut -f1)
  stop_server
  # Restart on the same data: time to SERVING, with the index rebuilt.
  started=$(date +%s%N)
  ./target/release/segmentd serve --listen "$addr" --data-dir "$work/db" --log-format json >>"$work/server.log" 2>&1 &
  server=$!
  until ./target/release/segmentd healthcheck --addr "$addr" >/dev/null 2>&1; do sleep 0.05; done
  echo "| $durability | restart to SERVING, index rebuilt | | $(( ($(date +%s%N) - started) / 1000000 )) ms |"
  echo "| $durability | server RSS after restart | | $(($(ps -o rss= -p "$server") / 1024)) MiB |"
  stop_server
done
echo
echo "On disk after the relaxed run (255,000 customers, 2,000,000 purchases): $((size / 1024)) MiB"
