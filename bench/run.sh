#!/usr/bin/env bash
# Benchmarks a release build of segmentd on this machine, against servers it
# starts on loopback with fresh data directories, using the load generator
# in examples/load/:
#   1. unary CreateCustomer, with durable and with relaxed acknowledgements;
#   2. a synthetic data set (default 1M customers, 10M purchases, seeded)
#      streamed in durably, then a restart: ingest rates, peak RSS, bytes on
#      disk and in the index per purchase, and the time back to SERVING;
#   3. on that data, BreakdownPersonas over everyone, and GetCustomerPersona
#      for random customers with the server on one core and the load on
#      the other: closed loop with many and with two calls in flight, the
#      latter also while purchases arrive, then open loop at half of the
#      saturated rate, beside a health check at the same rate.
#
# Before all that, with no server running, it times wake-ups from short sleeps
# on an idle core: the machine's own latency floor.
#
# Usage: bash bench/run.sh      (CUSTOMERS=... PURCHASES=... to resize;
#        ONLY=storage for just the data set's ingest, its size on disk and
#        two restarts, each with the rebuild's phases; COMPRESS_STORE=true
#        for servers that make their stores compressed)
set -euo pipefail
cd "$(dirname "$0")/.."

customers=${CUSTOMERS:-1000000}
purchases=${PURCHASES:-10000000}
cargo build --release --locked --bin segmentd --example load
work=$(mktemp -d)
addr=127.0.0.1:${SEGMENTD_BENCH_PORT:-50151}
server=
trap 'if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; fi; rm -rf "$work"' EXIT

pin_server=()
start_server() { # durability
  "${pin_server[@]}" ./target/release/segmentd serve --listen "$addr" --data-dir "$work/db" \
    --durability "$1" --compress-store "${COMPRESS_STORE:-false}" --log-format json \
    >"$work/server.log" 2>&1 &
  server=$!
  started_ns=$(date +%s%N)
  for _ in $(seq 6000); do
    if ./target/release/segmentd healthcheck --addr "$addr" >/dev/null 2>&1; then
      serving_ms=$(( ($(date +%s%N) - started_ns) / 1000000 ))
      return
    fi
    sleep 0.05
  done
  echo "server did not start" >&2
  exit 1
}

stop_server() {
  local stopping_ns
  stopping_ns=$(date +%s%N)
  kill -TERM "$server"
  wait "$server"
  stop_ms=$(( ($(date +%s%N) - stopping_ns) / 1000000 ))
  server=
}

# What the last stop wrote of the index's image: its size and time.
image_written() {
  local line
  line=$(grep '"index image written"' "$work/server.log" | tail -1)
  echo "$(( $(echo "$line" | grep -o '"bytes":[0-9]*' | cut -d: -f2) / 1048576 )) MiB in $(echo "$line" | grep -o '"ms":[0-9]*' | cut -d: -f2) ms"
}

load() { ./target/release/examples/load --addr "$addr" "$@"; }

# A crash leaves no image: the start after SIGKILL rebuilds the index from
# the store.
crash_restart() {
  kill -KILL "$server"
  wait "$server" || true
  server=
  start_server durable
  echo "| restart after SIGKILL to SERVING, index rebuilt from the store | | $serving_ms ms |"
  echo "| the rebuild's phases, ms | | $(grep '"index rebuilt"' "$work/server.log" | tail -1 | grep -o '"[a-z_]*_ms":[0-9]*' | tr -d '"' | tr '\n' ' ')|"
  echo "| server RSS after the rebuild | | $(mib "$(grep VmRSS "/proc/$server/status" | awk '{print $2}')") MiB |"
}
# Waits for the start's background work, so that the queries are measured
# on their own: the change history loaded, then a second with the server
# all but idle (a prediction fit due at the start runs meanwhile); at
# most two minutes.
settle() {
  local ticks=$(( $(getconf CLK_TCK) )) before after
  for _ in $(seq 1200); do
    grep -q '"change history loaded"' "$work/server.log" && break
    sleep 0.1
  done
  for _ in $(seq 120); do
    before=$(awk '{print $14 + $15}' "/proc/$server/stat")
    sleep 1
    after=$(awk '{print $14 + $15}' "/proc/$server/stat")
    [ $(( (after - before) * 20 )) -lt "$ticks" ] && return
  done
  echo "the server did not fall idle within two minutes; measuring anyway" >&2
}
pinned_load() { taskset -c 1 ./target/release/examples/load --addr "$addr" "$@"; }
mib() { echo $(( $1 / 1024 )); }
log_field() { grep -o "\"$1\":[0-9]*" "$work/server.log" | tail -1 | cut -d: -f2; }

echo "| run | throughput | latency or size |"
echo "|---|---|---|"
only=${ONLY:-}
if [ -z "$only" ]; then
# The machine first: how late an idle core wakes from a short sleep.
taskset -c 1 ./target/release/examples/load wakeups --seconds 10
fi
for durability in durable relaxed; do
  [ -z "$only" ] || break
  rm -rf "$work/db"
  start_server "$durability"
  printf '| %s: ' "$durability"; load create --requests 50000 --connections 4 --concurrency 64 | cut -c3-
  printf '| %s: ' "$durability"; load create --requests 5000 --connections 1 --concurrency 1 --first 100000 | cut -c3-
  stop_server
done

rm -rf "$work/db"
start_server durable
load dataset --customers "$customers" --purchases "$purchases"
peak_kib=$(grep VmHWM "/proc/$server/status" | awk '{print $2}')
stop_server
# The store alone: the image is on disk only from a clean stop to the next start.
disk_bytes=$(( $(du -sk --exclude=index.image "$work/db" | cut -f1) * 1024 ))
echo "| server peak RSS during ingest | | $(mib "$peak_kib") MiB |"
echo "| on disk | | $(( disk_bytes / purchases )) bytes per purchase ($(( disk_bytes / 1048576 )) MiB) |"
echo "| clean stop, index image written | | $stop_ms ms; the image $(image_written) |"
start_server durable
echo "| restart to SERVING, index read from the image | | $serving_ms ms |"
echo "| index memory | | $(log_field index_bytes_per_purchase) bytes per purchase, $(log_field index_bytes_per_customer) bytes per customer, $(log_field index_bytes_per_engagement) bytes per engagement event |"
echo "| server RSS after restart | | $(mib "$(grep VmRSS "/proc/$server/status" | awk '{print $2}')") MiB |"
if [ "$only" = storage ]; then
  echo "| reading the image, ms | | $(grep '"index read from the image' "$work/server.log" | grep -o '"ms":[0-9]*' | cut -d: -f2) |"
  stop_server
  start_server durable
  echo "| second restart to SERVING | | $serving_ms ms |"
  echo "| server RSS after the second restart | | $(mib "$(grep VmRSS "/proc/$server/status" | awk '{print $2}')") MiB |"
  crash_restart
  stop_server
  exit 0
fi
settle
load persona-breakdown --runs 7
load breakdown --runs 7
crash_restart
stop_server

# GetCustomerPersona per server core: the server on core 0, the load on
# core 1; with many calls in flight (saturation), then with two, which
# keeps the server at well over half of that rate.
pin_server=(taskset -c 0)
start_server durable
settle
saturated=$(pinned_load persona --requests 300000 --connections 4 --concurrency 128 --customers "$customers")
echo "$saturated"
pinned_load persona --requests 100000 --connections 2 --concurrency 2 --customers "$customers"
# The same while purchases arrive one per call: each moves the RFM bounds.
pinned_load persona --requests 100000 --connections 2 --concurrency 2 --customers "$customers" \
  --purchases-per-second 1000
# Open loop at half of that rate, each call timed from when it was due,
# beside the same load on a health check, which does no work: the floor
# that the transport and the machine set. Three rounds, as the tail varies
# from run to run.
half=$(( $(echo "$saturated" | grep -o '[0-9]* calls/s' | cut -d' ' -f1) / 2 ))
for _ in 1 2 3; do
  pinned_load persona --requests $(( half * 10 )) --rate "$half" --customers "$customers"
  pinned_load health --requests $(( half * 10 )) --rate "$half"
done
stop_server
