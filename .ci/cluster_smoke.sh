#!/usr/bin/env bash
# Cluster mode as docs/cluster.md tries it on one machine: three NATS nodes
# from .ci/nats/cluster.sh, two replicas, and a write through one read back
# through the other with its consistency token, by grpcurl. Loopback only.
#
#   bash .ci/cluster_smoke.sh path/to/segmentd
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$1
work=$(mktemp -d)
mkdir "$work/nats"
cleanup() {
  kill $(jobs -p) 2>/dev/null || true
  bash .ci/nats/cluster.sh stop "$work/nats" >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# Ports below Linux's ephemeral range (32768 and up), which the tests'
# clients and servers draw from, so that none of them holds one already.
urls=$(bash .ci/nats/cluster.sh start "$work/nats" 24222)
for i in 1 2; do
  "$bin" serve --listen "127.0.0.1:2505$i" --data-dir "$work/r$i" --cluster "$urls" \
    >"$work/r$i.log" 2>&1 &
done
for i in 1 2; do
  for _ in $(seq 300); do
    "$bin" healthcheck --addr "127.0.0.1:2505$i" >/dev/null 2>&1 && break
    sleep 0.1
  done
  if ! "$bin" healthcheck --addr "127.0.0.1:2505$i"; then
    cat "$work/r$i.log" >&2
    exit 1
  fi
done

token=$(grpcurl -plaintext -v -d '{"customer_id":"smoke","customer":{}}' 127.0.0.1:25051 \
  segmentd.v1.CustomerService/CreateCustomer | sed -n 's/^segmentd-consistency-token: //p')
if [ -z "$token" ]; then
  echo "the write answered without a consistency token" >&2
  exit 1
fi
grpcurl -plaintext -rpc-header "segmentd-consistency-token: $token" \
  -d '{"name":"customers/smoke"}' 127.0.0.1:25052 segmentd.v1.CustomerService/GetCustomer \
  | grep -q '"customers/smoke"'
echo "a write through one replica, read back through the other with token $token"
