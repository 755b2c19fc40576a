#!/usr/bin/env bash
# Benchmarks watching on a release build of segmentd, on this machine,
# against a server it starts on loopback with a fresh data directory:
# the seeded synthetic data set of bench/run.sh (default 1M customers,
# 10M purchases) streamed in durably, then the `watch` run of the load
# generator in examples/load/: 100 saved segments with varied rules,
# 1,000 watch streams (10 of them of personas) over 8 connections, and
# 1,000 purchases a second recorded durably, 10 to a call, each the first
# purchase of a fresh customer whom it brings into a watched segment.
# It prints the time from each write's acknowledgement to the first watch
# message that reports the customer entering, ListCustomerSegments' latency
# over those segments at 500 calls a second, and the server's CPU with
# the same writes and no watches, with the watches and no writes, and with
# both, read from /proc/PID/stat, and the server's evaluations from its
# metrics. The run stops early if the server's memory goes above 8 GiB
# (--max-server-rss-mib in WATCH_ARGS to change).
#
# Usage: bash bench/watch.sh   (CUSTOMERS=... PURCHASES=... to resize;
#                              WATCH_ARGS="--seconds 60 ..." for the run)
set -euo pipefail
cd "$(dirname "$0")/.."

customers=${CUSTOMERS:-1000000}
purchases=${PURCHASES:-10000000}
cargo build --release --locked --bin segmentd --example load
work=$(mktemp -d)
addr=127.0.0.1:${SEGMENTD_BENCH_PORT:-50152}
metrics=127.0.0.1:${SEGMENTD_BENCH_METRICS_PORT:-50153}
server=
# Stops the server: asked to, then, if it has not gone in 10 s (it waits
# for open streams), killed.
stop_server() {
  [ -n "$server" ] || return 0
  kill -TERM "$server" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 "$server" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  server=
}
trap 'stop_server; rm -rf "$work"' EXIT

./target/release/segmentd serve --listen "$addr" --data-dir "$work/db" \
  --durability durable --metrics-listen "$metrics" --log-format json >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1200); do
  if ./target/release/segmentd healthcheck --addr "$addr" >/dev/null 2>&1; then
    break
  fi
  sleep 0.05
done
./target/release/segmentd healthcheck --addr "$addr" >/dev/null

load() { ./target/release/examples/load --addr "$addr" "$@"; }

echo "| run | throughput | latency or CPU |"
echo "|---|---|---|"
load dataset --customers "$customers" --purchases "$purchases"
# shellcheck disable=SC2086 # WATCH_ARGS is a list of flags
load watch --customers "$customers" --server-pid "$server" --metrics-addr "$metrics" ${WATCH_ARGS:-}
# One customer's saved segments, the 100 segments above, over gRPC: at a
# fixed rate beside the health check at the same rate (which does no
# work), then one call at a time.
load health --rate 500 --requests 20000 --connections 2
load customer-segments --customers "$customers"
load customer-segments --customers "$customers" --members-only
load customer-segments --customers "$customers" --rate 0 --concurrency 1
stop_server
