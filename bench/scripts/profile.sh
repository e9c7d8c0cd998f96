#!/usr/bin/env bash
# Samples a node's media thread with perf (cpu-clock works without hardware counters) during a
# bench run, then groups the samples as in BENCHMARKS.md ("Where the time goes").
# Usage: bench/scripts/profile.sh STREAMS PLAYERS [OUT.data]
# NODE_ARGS adds options to the node (e.g. NODE_ARGS="--media-gso off").
set -u
B=${B:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
OUT=${3:-perf-$1x$2.data}
"$B/rtcdn" --http 127.0.0.1:18500 --udp-port-base 45000 --media-threads 1 --log warn ${NODE_ARGS:-} &
NODE=$!
sleep 0.5
"$B/rtcdn-bench" --server http://127.0.0.1:18500 --streams $1 --players $2 --seconds 10 --quiet > /dev/null 2>&1 &
BENCH=$!
sleep 4
TID=$(grep -l rtcdn-media /proc/$NODE/task/*/comm | head -1 | cut -d/ -f5)
perf record -e cpu-clock -F 1999 -g -t "$TID" -o "$OUT" -- sleep 8 2> /dev/null
wait $BENCH
kill $NODE
wait $NODE 2> /dev/null
python3 "$(dirname "$0")/perf_classes.py" "$OUT"
