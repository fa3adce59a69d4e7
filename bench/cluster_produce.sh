#!/usr/bin/env bash
# Produce over HTTP, cluster mode vs one embedded server, same run: wrk
# against one weir host of bench/cluster.sh (3 NATS nodes, R3) and against
# a plain `weir serve` (fsync always), 1 and 100 records per request and 1
# record per request with an Idempotency-Key of its own, a 3-partition
# topic each.
#
#   bench/cluster_produce.sh [path/to/weir]   # default: target/release/weir; ~1 min
#
# Needs wrk and nats-server (guest-sdk/install-toolchains.sh nats).
set -euo pipefail
cd "$(dirname "$0")/.."
WEIR=${1:-target/release/weir}
DUR=${DUR:-5s}
CONNS=${CONNS:-16}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
TMP=$(mktemp -d)
CLUSTER_PID=""
cleanup() {
  [ -n "$CLUSTER_PID" ] && kill "$CLUSTER_PID" 2>/dev/null
  [ -n "${EMBEDDED_PID:-}" ] && kill "$EMBEDDED_PID" 2>/dev/null
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

rate() { # url, script
  wrk -t2 -c"$CONNS" -d"$DUR" -s "bench/$2" "$1" | awk '/Requests\/sec/ {print $2}'
}
topic() { # base url
  curl -sf "$1/topics" -H content-type:application/json -d '{"name":"bench","partitions":3}' >/dev/null
}

"$WEIR" serve --listen 127.0.0.1:0 --data-dir "$TMP/embedded" --fsync always >"$TMP/embedded.out" 2>"$TMP/embedded.log" &
EMBEDDED_PID=$!
for _ in $(seq 100); do grep -q "listening on" "$TMP/embedded.out" 2>/dev/null && break; sleep 0.1; done
EMBEDDED=$(sed -n 's/^weir listening on //p' "$TMP/embedded.out")
topic "$EMBEDDED"
e1=$(rate "$EMBEDDED/topics/bench/records" produce_one.lua)
e100=$(rate "$EMBEDDED/topics/bench/records" produce_batch.lua)
ek=$(rate "$EMBEDDED/topics/bench/records" produce_keyed.lua)
kill "$EMBEDDED_PID"; wait "$EMBEDDED_PID" 2>/dev/null || true; EMBEDDED_PID=""

bench/cluster.sh "$WEIR" >"$TMP/cluster.out" 2>&1 &
CLUSTER_PID=$!
for _ in $(seq 300); do grep -q "Ctrl-C stops" "$TMP/cluster.out" 2>/dev/null && break; sleep 0.1; done
HOST=$(sed -n 's/^weir host 0: //p' "$TMP/cluster.out")
[ -n "$HOST" ] || { cat "$TMP/cluster.out" >&2; exit 1; }
topic "$HOST"
c1=$(rate "$HOST/topics/bench/records" produce_one.lua)
c100=$(rate "$HOST/topics/bench/records" produce_batch.lua)
ck=$(rate "$HOST/topics/bench/records" produce_keyed.lua)

python3 - "$e1" "$e100" "$c1" "$c100" "$ek" "$ck" "$CONNS" "$DUR" <<'PY'
import sys
e1, e100, c1, c100, ek, ck = map(float, sys.argv[1:7])
print(f"{sys.argv[7]} connections, {sys.argv[8]} per run, {__import__('os').cpu_count()} cores, 3 partitions")
print(f"1 record/request:    embedded {e1:>9,.0f} req/s   cluster {c1:>9,.0f} req/s   ({c1/e1:.2f}x)")
print(f"100 records/request: embedded {e100*100:>9,.0f} rec/s   cluster {c100*100:>9,.0f} rec/s   ({c100/e100:.2f}x)")
print(f"1 record, idempotent: embedded {ek:>9,.0f} req/s   cluster {ck:>9,.0f} req/s   ({ck/ek:.2f}x; cluster keyed/plain {ck/c1:.2f}x)")
PY
