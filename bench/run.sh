#!/usr/bin/env bash
# Benchmarks a release build of segmentd on this machine: starts the server
# on a fresh data directory on loopback, runs the load generator
# (examples/load.rs) against it, and stops the server.
#
# Usage: bash bench/run.sh
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build --release --locked --bin segmentd --example load
data_dir=$(mktemp -d)
port=${SEGMENTD_BENCH_PORT:-50151}
addr=127.0.0.1:$port
./target/release/segmentd serve --listen "$addr" --data-dir "$data_dir/db" \
  --log-format json >"$data_dir/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true; rm -rf "$data_dir"' EXIT
for _ in $(seq 100); do
  ./target/release/segmentd healthcheck --addr "$addr" >/dev/null 2>&1 && break
  sleep 0.1
done

echo "| run | throughput | latency or time |"
echo "|---|---|---|"
./target/release/examples/load --addr "$addr" create --requests 50000 --connections 4 --concurrency 64
./target/release/examples/load --addr "$addr" create --requests 5000 --connections 1 --concurrency 1
./target/release/examples/load --addr "$addr" import --customers 200000 --batch 1000

kill -TERM "$server"
wait "$server"
echo
echo "on disk: $(du -sh "$data_dir/db" | cut -f1) for 255,000 customers"
