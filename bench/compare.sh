#!/usr/bin/env bash
# Compares segmentd's BreakdownCustomers with DuckDB, polars and PostgreSQL
# 15 on one seeded synthetic data set (default 1M customers, 10M purchases,
# and their visits, feedback and referrals), made by examples/load/: the
# `dataset` command streams it into a release build of segmentd, started on
# loopback with a fresh data directory, and the `export` command writes the
# very same data as CSV files for the other engines. Two questions, as of
# 2026-11-23T00:00:00Z, timed per engine in bench/compare.py:
#   Q1  external customers with an income of at least 50,000 by country x
#       gender x age band (count, total spend, mean purchase count), the
#       other engines reading a per-customer feature table built untimed;
#   Q2  every customer by frequency class x relationship x engagement stage,
#       the other engines computing it from the raw purchases and engagement
#       events, timed whole.
# Prints a Markdown table of the medians and the design's targets. Exits
# non-zero if the engines' answers differ; a missed target is only reported.
#
# Usage: bash bench/compare.sh [--engines segmentd,duckdb,polars,postgres]
#                              [--runs 7] [--warmup 1] [--show]
#   CUSTOMERS=... PURCHASES=... SEED=... resize or reseed the data set;
#   --show prints every group of both answers.
#
# It installs what it needs if missing: the Python packages duckdb, polars,
# grpcio, grpcio-tools, protobuf and psycopg with pip, and PostgreSQL 15 with
# apt-get. PostgreSQL runs as its own cluster in a temporary directory,
# listening only on a Unix socket there, as the `postgres` user when run as
# root. Everything it starts is stopped and its files removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

customers=${CUSTOMERS:-1000000}
purchases=${PURCHASES:-10000000}
seed=${SEED:-42}
python=${PYTHON:-python3}
engines=segmentd,duckdb,polars,postgres
pass=()
while [ $# -gt 0 ]; do
  case $1 in
    --engines) engines=${2:?--engines needs a list}; shift 2 ;;
    --engines=*) engines=${1#*=}; shift ;;
    -h | --help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done
uses() { [[ ",$engines," == *",$1,"* ]]; }

# Python packages, each for the engines that need it: "module package".
needs=()
uses duckdb && needs+=("duckdb duckdb")
uses polars && needs+=("polars polars")
uses postgres && needs+=("psycopg psycopg[binary]")
uses segmentd && needs+=("grpc grpcio" "grpc_tools grpcio-tools" "google.protobuf protobuf")
missing=()
for need in "${needs[@]}"; do
  read -r module package <<<"$need"
  "$python" -c "import $module" 2>/dev/null || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} with pip" >&2
  "$python" -m pip install --quiet "${missing[@]}"
fi

pg_bin=/usr/lib/postgresql/15/bin
if uses postgres && [ ! -x "$pg_bin/initdb" ]; then
  echo "installing postgresql-15 with apt-get" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql-15 >/dev/null
fi
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

if uses segmentd; then
  cargo build --release --locked --example load --bin segmentd
else
  cargo build --release --locked --example load
fi

work=$(mktemp -d)
chmod 711 "$work" # the postgres user reaches its own directory inside
addr=127.0.0.1:${SEGMENTD_BENCH_PORT:-50152}
server=
pg_data=
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null && wait "$server" 2>/dev/null || true; fi
  if [ -n "$pg_data" ]; then as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m fast -w stop >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

echo "Data set: $customers customers, $purchases purchases, seed $seed; $(nproc) cores."
echo
echo "| step | throughput | size |"
echo "|---|---|---|"
if [[ $engines != segmentd ]]; then
  ./target/release/examples/load export --dir "$work/csv" \
    --customers "$customers" --purchases "$purchases" --seed "$seed"
fi

py_args=(--data "$work/csv" --engines "$engines")
if uses segmentd; then
  ./target/release/segmentd serve --listen "$addr" --data-dir "$work/db" \
    --log-format json >"$work/server.log" 2>&1 &
  server=$!
  for _ in $(seq 1200); do
    if ./target/release/segmentd healthcheck --addr "$addr" >/dev/null 2>&1; then break; fi
    if ! kill -0 "$server" 2>/dev/null; then
      echo "segmentd exited:" >&2; tail -20 "$work/server.log" >&2; server=; exit 1
    fi
    sleep 0.05
  done
  ./target/release/segmentd healthcheck --addr "$addr" >/dev/null || { echo "segmentd did not start" >&2; exit 1; }
  ./target/release/examples/load --addr "$addr" dataset \
    --customers "$customers" --purchases "$purchases" --seed "$seed"
  echo "| segmentd RSS after the load | | $(( $(grep VmRSS "/proc/$server/status" | awk '{print $2}') / 1024 )) MiB |"
  # Python stubs of the API; the well-known types come with grpcio-tools.
  mkdir "$work/stubs"
  (cd proto && "$python" -m grpc_tools.protoc -I . --python_out "$work/stubs" \
    --grpc_python_out "$work/stubs" $(find . -name '*.proto' | sort))
  py_args+=(--addr "$addr" --stubs "$work/stubs")
fi

if uses postgres; then
  pg_dir=$work/pg
  mkdir "$pg_dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$pg_dir"
  as_pg "$pg_bin/initdb" -D "$pg_dir/data" -U postgres --auth=trust -E UTF8 --locale=C >"$pg_dir/initdb.log" 2>&1 ||
    { cat "$pg_dir/initdb.log" >&2; exit 1; }
  pg_data=$pg_dir/data
  # A throwaway cluster: no durability, enough memory for the whole data set.
  as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$pg_dir/server.log" -w -o \
    "-c listen_addresses='' -c unix_socket_directories='$pg_dir' -c shared_buffers=2GB \
     -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c wal_level=minimal \
     -c max_wal_senders=0 -c max_wal_size=8GB" start >/dev/null ||
    { cat "$pg_dir/server.log" >&2; pg_data=; exit 1; }
  py_args+=(--pg-host "$pg_dir")
fi

echo
"$python" bench/compare.py "${py_args[@]}" ${pass[@]+"${pass[@]}"}
