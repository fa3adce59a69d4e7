#!/usr/bin/env bash
# Server benchmark: HTTP produce throughput (single and batched), command
# round-trip latency under concurrency, and the longest processing stall
# during hot swaps, each next to a reference measured in the same run.
#
#   bench/server.sh                 # ~2 minutes
#   QUICK=1 bench/server.sh         # ~40 s, noisier
#
# Needs wrk (apt-get install -y wrk) and python3. Builds the release binary
# into $CARGO_TARGET_DIR (default: the project's target/) and the example
# plugins for wasm32-wasip2. Everything runs on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
DUR=${DUR:-10s}; [ -n "${QUICK:-}" ] && DUR=3s
CONNS=${CONNS:-32}
FSYNC=${FSYNC:-always}

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
cargo build --release -q -p weir-host --bin weir
cargo build --release -q --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --target-dir "$ROOT/target/plugins"
WEIR=$CARGO_TARGET_DIR/release/weir
PLUGINS=$ROOT/target/plugins/wasm32-wasip2/release

DATA=$(mktemp -d)
LOG=$DATA/server.log
OUT=$DATA/stdout
"$WEIR" serve --listen 127.0.0.1:0 --data-dir "$DATA/data" --fsync "$FSYNC" >"$OUT" 2>"$LOG" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$OUT" 2>/dev/null && break; sleep 0.1; done
URL=$(sed -n 's/^weir listening on //p' "$OUT")
HOSTPORT=${URL#http://}
echo "server $URL, fsync=$FSYNC, $CONNS connections, $DUR per run, $(nproc) cores"

curl -sf "$URL/topics" -H 'content-type: application/json' -d '{"name":"bench","partitions":4}' >/dev/null

run() { # id, name, path, script, [extra wrk args]
  local id=$1 name=$2 path=$3 script=$4; shift 4
  local out; out=$(wrk -t$(( CONNS < 2 ? CONNS : 2 )) -c"$CONNS" -d"$DUR" --latency ${script:+-s "bench/$script"} "$@" "$URL$path")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1=="50%" {print $2}' <<<"$out")
  p99=$(awk '$1=="99%" {print $2}' <<<"$out")
  local errs; errs=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf '%-34s %12s req/s  p50 %8s  p99 %8s  %s\n' "$name" "$rps" "$p50" "$p99" "${errs:+non-2xx: $errs}"
  echo "$rps" >"$DATA/$id.rps"
}

run health "reference: GET /healthz" /healthz ""
run single "produce 1 record/request" /topics/bench/records produce_one.lua
run batch "produce 100 records/request" /topics/bench/records produce_batch.lua
batch_rps=$(cat "$DATA/batch.rps")
single_rps=$(cat "$DATA/single.rps")
health_rps=$(cat "$DATA/health.rps")
python3 - "$single_rps" "$batch_rps" "$health_rps" <<'PY'
import sys
single, batch, health = map(float, sys.argv[1:])
print(f"records/s: single {single:,.0f}, batched {batch*100:,.0f} ({batch*100/single:.1f}x single); "
      f"single produce = {single/health:.2f} of the /healthz request rate")
PY

# Command round trip (open a fresh account per request, wait for the result).
export WRK_RUN
curl -sf -X PUT "$URL/plugins/bank" -H 'content-type: application/wasm' \
  -H 'weir-manifest: {"name":"bank","kind":"command-handler","partitions":4}' \
  --data-binary @"$PLUGINS/command_bank.wasm" >/dev/null
for c in 1 16; do
  WRK_RUN=$c CONNS=$c run "cmd$c" "command round trip, $c concurrent" "/services/bank/commands?wait=true" command.lua
done
WRK_RUN=a16 CONNS=16 run cmd202 "command accepted (202), 16 concurrent" "/services/bank/commands" command.lua

# Hot swap: re-deploy an enricher 20 times while wrk produces into its input.
curl -sf "$URL/topics" -H 'content-type: application/json' -d '{"name":"in","partitions":4}' >/dev/null
WINDOW=6; [ -n "${QUICK:-}" ] && WINDOW=3
wrk -t1 -c4 -d$((2 * WINDOW + 4))s -s bench/produce_batch.lua "$URL/topics/in/records" >/dev/null &
WRK=$!
python3 bench/stall.py --host "${HOSTPORT%:*}" --port "${HOSTPORT##*:}" \
  --component "$PLUGINS/stamp_enricher.wasm" --swaps 20 --window "$WINDOW"
wait $WRK || true
