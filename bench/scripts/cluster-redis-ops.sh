#!/usr/bin/env bash
# Redis operations per second per node of a dynamic CDN (issue 14, BENCHMARKS.md §14), at rest
# and under churn.
#
# Starts a redis-server on a loopback port and three rtcdn nodes in one cluster (one origin and
# edge, two edges), then reads Redis's own count of commands processed (INFO stats:
# total_commands_processed) over:
#   - rest:  WINDOW seconds with nothing published (leases only), three windows;
#   - churn: three rtcdn-bench runs of STREAMS streams x PLAYERS players, players sent to the
#            edges by /lb?stream= (pulls on demand), publishers leaving at the end of each run,
#            pulls released after idle_pull_secs = 2; each window is the run plus 3 s after.
# Prints each window's commands per second per node, the median of the three, and the commands
# by name from INFO commandstats over the whole churn phase.
#
# Usage: bench/scripts/cluster-redis-ops.sh [RTCDN_BIN] [RTCDN_BENCH_BIN]
#   (default target/release/rtcdn and target/release/rtcdn-bench; build them first)
# Environment: WINDOW (10), STREAMS (10), PLAYERS (3), RUN_SECONDS (5), REDIS_PORT (16379).
# Everything listens on 127.0.0.1 only.
set -euo pipefail

RTCDN=${1:-target/release/rtcdn}
BENCH=${2:-target/release/rtcdn-bench}
WINDOW=${WINDOW:-10}
STREAMS=${STREAMS:-10}
PLAYERS=${PLAYERS:-3}
SECONDS_RUN=${RUN_SECONDS:-5}
REDIS_PORT=${REDIS_PORT:-16379}
NODES=3
SECRET=redis-ops-cluster-secret-0123456789abcdef

for tool in redis-server redis-cli "$RTCDN" "$BENCH"; do
  command -v "$tool" >/dev/null || [ -x "$tool" ] || { echo "missing: $tool" >&2; exit 1; }
done

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --daemonize no >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && break; sleep 0.1; done

# node i: HTTP 127.0.0.1:1860i, media ports 3300i0..; node 0 is origin and edge.
for i in $(seq 0 $((NODES - 1))); do
  roles='["edge"]'
  [ "$i" = 0 ] && roles='["origin", "edge"]'
  cat >"$work/node$i.toml" <<EOF
[http]
listen = "127.0.0.1:1860$i"
[media]
port_base = 33${i}00
threads = 1
[rtmp]
enabled = false
[log]
level = "warn"
[cluster]
redis_url = "redis://127.0.0.1:$REDIS_PORT"
node_id = "node$i"
roles = $roles
secret = "$SECRET"
idle_pull_secs = 2
EOF
  "$RTCDN" --config "$work/node$i.toml" >"$work/node$i.log" 2>&1 &
  pids+=($!)
done
# Every node's lease written, every view read.
sleep 5

commands() {
  redis-cli -p "$REDIS_PORT" info stats | tr -d '\r' | awk -F: '/^total_commands_processed:/ {print $2}'
}
per_node_per_sec() { # before after seconds
  awk -v a="$1" -v b="$2" -v s="$3" -v n="$NODES" 'BEGIN { printf "%.2f", (b - a) / s / n }'
}
median3() { printf '%s\n' "$@" | sort -g | sed -n 2p; }

# INFO's own command counts itself: subtract one per read.
echo "== rest: ${WINDOW} s windows, $NODES nodes, nothing published"
rest=()
for run in 1 2 3; do
  before=$(commands); start=$(date +%s.%N)
  sleep "$WINDOW"
  after=$(commands); end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
  rate=$(per_node_per_sec "$before" "$((after - 1))" "$secs")
  rest+=("$rate")
  echo "run $run: $rate commands/s per node"
done
echo "rest median: $(median3 "${rest[@]}") commands/s per node"

redis-cli -p "$REDIS_PORT" config resetstat >/dev/null
echo "== churn: $STREAMS streams x $PLAYERS players via /lb?stream=, ${SECONDS_RUN} s each, 3 runs"
churn=()
for run in 1 2 3; do
  before=$(commands); start=$(date +%s.%N)
  "$BENCH" --server http://127.0.0.1:18600 --lb --stream "churn$run" --streams "$STREAMS" \
    --players "$PLAYERS" --seconds "$SECONDS_RUN" >"$work/bench$run.log" 2>&1 ||
    { echo "bench run $run failed:" >&2; tail -5 "$work/bench$run.log" >&2; exit 1; }
  sleep 3
  after=$(commands); end=$(date +%s.%N)
  secs=$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')
  rate=$(per_node_per_sec "$before" "$((after - 1))" "$secs")
  churn+=("$rate")
  echo "run $run: $rate commands/s per node over $(printf '%.1f' "$secs") s"
done
echo "churn median: $(median3 "${churn[@]}") commands/s per node"
echo "== commands during the churn phase (INFO commandstats)"
redis-cli -p "$REDIS_PORT" info commandstats | tr -d '\r' | grep '^cmdstat_' |
  sed -E 's/^cmdstat_([^:]+):calls=([0-9]+).*/\1 \2/' | sort -k2 -n -r
