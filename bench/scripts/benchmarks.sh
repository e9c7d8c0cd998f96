#!/usr/bin/env bash
# The measurement set behind BENCHMARKS.md: every point 3 runs (median reported by the bench).
# Usage: bench/scripts/benchmarks.sh [OUT_DIR]   (after cargo build --release --workspace --bins)
# Keep the machine otherwise idle while it runs (~10 minutes).
set -u
B=${B:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
O=${1:-$(mktemp -d /tmp/rtcdn-bench.XXXXXX)}
mkdir -p "$O"
O=$(cd "$O" && pwd)
cd "$O" || exit 1

for F in 2 10 100; do
  "$B/rtcdn-bench" limit --fanout $F --repeat 3 --json > limit-$F.json 2> limit-$F.err
done
# The GSO baseline: each destination's frame of 8 packets in one UDP_SEGMENT send.
"$B/rtcdn-bench" limit --fanout 100 --gso --repeat 3 --json > limit-gso-100.json 2> limit-gso-100.err
# Both baselines at the stream's rate (305 packets/s), a frame at a time: the node's load.
for G in "" --gso; do
  "$B/rtcdn-bench" limit --fanout 100 $G --ingress-pps 305 --repeat 3 --json > limit-paced$G-100.json 2> limit-paced$G-100.err
done

node() { # port udp-base backend [more node options]
  local port=$1 base=$2 backend=$3
  shift 3
  "$B/rtcdn" --http 127.0.0.1:$port --udp-port-base $base --media-threads 1 --media-backend $backend --log warn "$@" 2>> node.log &
  NODE=$!
  sleep 1
}
bench() { # out server args...
  local out=$1 server=$2
  shift 2
  "$B/rtcdn-bench" --server $server --seconds 5 --repeat 3 --quiet --json --setup-timeout 30 "$@" > $out.json 2> $out.err
}

# 1. fan-out and 2. many streams, one media thread
node 18500 45000 auto
for M in 10 100 300 500; do bench s1-$M http://127.0.0.1:18500 --server-pid $NODE --players $M --stream s1m$M; done
for N in 1 10 100; do bench s2-$N http://127.0.0.1:18500 --server-pid $NODE --streams $N --players 2 --stream s2n$N; done
kill $NODE; wait $NODE 2>/dev/null

# 4. the mmsg backend, as §1 at 100 players
node 18501 45100 mmsg
bench s4-mmsg-100 http://127.0.0.1:18501 --server-pid $NODE --players 100 --stream s4
kill $NODE; wait $NODE 2>/dev/null

# GSO off (media.gso = false), as §1 at 100 and 500 players
node 18502 45200 auto --media-gso off
for M in 100 500; do bench s1-nogso-$M http://127.0.0.1:18502 --server-pid $NODE --players $M --stream s1ng$M; done
kill $NODE; wait $NODE 2>/dev/null

# 3. origin -> edge -> players, all sharing the cores, then the origin pinned to CPU 0
cat > edge.toml <<T
[http]
listen = "127.0.0.1:18610"
[media]
port_base = 46100
threads = 1
[cdn]
role = "edge"
secret = "bench-cdn-secret-0123456789abcdef-01234"
T
cat > origin.toml <<T
[http]
listen = "127.0.0.1:18600"
[media]
port_base = 46000
threads = 1
[cdn]
role = "origin"
load_balancing_enabled = true
mode = "roundrobin"
secret = "bench-cdn-secret-0123456789abcdef-01234"
[[cdn.nodes]]
id = 1
host = "127.0.0.1"
ws = 18610
T
for LAYOUT in shared pinned; do
  if [ $LAYOUT = pinned ]; then ON1="taskset -c 1"; ON0="taskset -c 0"; else ON1=""; ON0=""; fi
  $ON1 "$B/rtcdn" --config edge.toml --log warn 2>> edge.log &
  EDGE=$!
  sleep 0.5
  $ON0 "$B/rtcdn" --config origin.toml --log warn 2>> origin.log &
  ORIGIN=$!
  sleep 1
  for M in 10 100; do
    $ON1 "$B/rtcdn-bench" --server http://127.0.0.1:18600 --lb --players $M --seconds 5 --repeat 3 \
      --server-pid $ORIGIN,$EDGE --stats-server http://127.0.0.1:18610 --quiet --json \
      --stream s3$LAYOUT$M --setup-timeout 30 > s3-$LAYOUT-$M.json 2> s3-$LAYOUT-$M.err
  done
  kill $EDGE $ORIGIN
  wait $EDGE $ORIGIN 2>/dev/null
done
echo "results in $O"
