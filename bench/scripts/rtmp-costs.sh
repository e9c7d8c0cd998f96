#!/usr/bin/env bash
# What RTMP ingest and AAC -> Opus transcoding cost the node, against WHIP ingest in the same run
# (BENCHMARKS.md §18, issue 15). Only the node's CPU counts: utime + stime of its PID from
# /proc/PID/stat over a fixed window; ffmpeg and the bench are other processes.
#
# Usage: bench/scripts/rtmp-costs.sh [OUT_DIR]
#   (after cargo build --release -p rtcdn -p rtcdn-bench; B=DIR names another binaries dir)
# Environment: N streams (10), RUNS (3), WINDOW measured seconds (20), WARM seconds (5).
#
# Each run, one fresh node per ingest (one media thread, --log warn), N streams each:
#   whip         rtcdn-bench publishes over WHIP (its shaped stream: 2.5 Mbit/s, 30 fps,
#                keyframe every 2 s, 50 audio packets/s); measured during --ramp-delay, before
#                any player joins
#   whip+player  the same run once one WHEP player per stream plays (the bench's --server-pid
#                window)
#   rtmp-v       N ffmpeg publish an H.264 clip over RTMP (-c copy, no audio), no players
#                (2026-12-03: the media core spins while an RTMP ingest has no player, so this
#                measures that loop, not the ingest; BENCHMARKS.md §18)
#   rtmp-v+player   ... and one bench WHEP player per stream (--play-only)
#   rtmp-av      N ffmpeg publish the H.264 + AAC clip, no players (no transcoding: the node
#                transcodes only while a player listens)
#   rtmp-av+player  ... and one bench WHEP player per stream, which takes audio: AAC -> Opus runs
# The clip is encoded once (1280x720 test pattern with noise so x264 reaches its 2.5 Mbit/s
# target, 30 fps, keyframe every 2 s, no B-frames; 48 kHz mono AAC at 64 kbit/s), so the
# publishers only copy it. Results: OUT_DIR/results.tsv (one row per case and run) and the
# medians on stdout.
set -u
B=${B:-$(cd "$(dirname "$0")/../.." && pwd)/target/release}
O=${1:-$(mktemp -d /tmp/rtcdn-rtmp-costs.XXXXXX)}
N=${N:-10}
RUNS=${RUNS:-3}
WINDOW=${WINDOW:-20}
WARM=${WARM:-5}
HTTP=${HTTP:-127.0.0.1:18690}
RTMP=${RTMP:-127.0.0.1:19390}
UDP_BASE=${UDP_BASE:-46900}
mkdir -p "$O"
O=$(cd "$O" && pwd)
cd "$O" || exit 1
TCK=$(getconf CLK_TCK)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; }
trap cleanup EXIT

if [ ! -s clip.flv ]; then
  ffmpeg -hide_banner -loglevel error -y \
    -f lavfi -i "testsrc=size=1280x720:rate=30" -f lavfi -i "sine=frequency=440:sample_rate=48000" \
    -t 60 -vf "noise=alls=20:allf=t" -c:v libx264 -preset veryfast -pix_fmt yuv420p -profile:v baseline \
    -b:v 2500k -maxrate 2500k -bufsize 2500k -g 60 -keyint_min 60 -sc_threshold 0 -bf 0 \
    -c:a aac -ac 1 -b:a 64k -f flv clip.flv || exit 1
fi
ffprobe -v error -show_entries stream=codec_name,width,height,bit_rate:format=bit_rate,duration \
  -of compact clip.flv > clip.txt 2>&1
printf '# tool\tcase\trun\tnode_cpu_cores\tper_stream_cores\tsent_packets_per_s_per_player\n' > results.tsv

cpu_ticks() { # utime + stime of PID, in clock ticks
  awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"
}
sample() { # case run pid: the node's CPU over WINDOW seconds
  local t0 t1 c0 c1
  c0=$(cpu_ticks "$3"); t0=$(date +%s.%N)
  sleep "$WINDOW"
  c1=$(cpu_ticks "$3"); t1=$(date +%s.%N)
  awk -v c="$1" -v r="$2" -v d=$((c1 - c0)) -v k="$TCK" -v a="$t0" -v b="$t1" -v n="$N" \
    'BEGIN { cores = d / k / (b - a); printf "script\t%s\t%s\t%.4f\t%.5f\t\n", c, r, cores, cores / n }' >> results.tsv
}
bench_row() { # case run json: the bench's server CPU over its window
  python3 - "$1" "$2" "$3" "$N" >> results.tsv <<'PY'
import json, sys
case, run, path, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
r = json.load(open(path))["runs"][0]
cores = r.get("server_cpu_cores")
pps = r.get("node_rtp_sent_pps") or 0  # the node's own count: ffmpeg's packets are not the bench's
print(f"bench\t{case}\t{run}\t{cores:.4f}\t{cores / n:.5f}\t{pps / n:.0f}" if cores is not None
      else f"bench\t{case}\t{run}\tNA\tNA\t")
PY
}
start_node() {
  printf '[media]\ntcp_max_connections_per_ip = 0\n' > node.toml
  "$B/rtcdn" --config node.toml --http $HTTP --udp-port-base "$UDP_BASE" --media-threads 1 --rtmp $RTMP \
    --log warn 2>> node.log &
  NODE=$!
  PIDS+=("$NODE")
  for _ in $(seq 50); do curl -sf -o /dev/null "http://$HTTP/" && return 0; sleep 0.2; done
  echo "the node did not start (node.log)" >&2
  exit 1
}
stop_node() { kill "$NODE"; wait "$NODE" 2>/dev/null; }
wait_live() { # prefix: every stream PREFIX-i is live (WHEP answers a bad offer with 400, not 404)
  local i code
  for i in $(seq 0 $((N - 1))); do
    for _ in $(seq 150); do
      code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -H 'content-type: application/sdp' \
        --data 'v=0' "http://$HTTP/whep/$1-$i")
      [ "$code" != 404 ] && [ "$code" != 000 ] && break
      sleep 0.2
    done
    [ "$code" = 404 ] && { echo "stream $1-$i never went live" >&2; exit 1; }
  done
}
bench() { # out args...
  local out=$1
  shift
  "$B/rtcdn-bench" --server "http://$HTTP" --quiet --json --setup-timeout 30 --seconds "$WINDOW" \
    --server-pid "$NODE" --streams "$N" --players 1 "$@" > "$out.json" 2> "$out.err"
}
rtmp_case() { # name run [ffmpeg output options]
  local name=$1 run=$2 i
  shift 2
  start_node
  local ff=()
  for i in $(seq 0 $((N - 1))); do
    ffmpeg -hide_banner -loglevel error -nostdin -re -stream_loop -1 -i clip.flv -c copy "$@" \
      -f flv "rtmp://$RTMP/live/$name-r$run-$i" 2>> "ffmpeg-$name.log" &
    ff+=("$!")
    PIDS+=("$!")
  done
  wait_live "$name-r$run"
  sleep "$WARM"
  sample "$name" "$run" "$NODE"
  # A --play-only player leaves only after 200 ms without a packet, so the publishers stop once
  # the bench's window is over (its progress says "drain"), not before.
  "$B/rtcdn-bench" --server "http://$HTTP" --json --setup-timeout 30 --seconds "$WINDOW" \
    --server-pid "$NODE" --streams "$N" --players 1 --play-only --stream "$name-r$run" \
    > "$name-player-r$run.json" 2> "$name-player-r$run.err" &
  local bench_pid=$!
  PIDS+=("$bench_pid")
  while kill -0 "$bench_pid" 2>/dev/null && ! grep -qs '] drain' "$name-player-r$run.err"; do sleep 0.5; done
  kill "${ff[@]}" 2>/dev/null
  wait "${ff[@]}" 2>/dev/null
  wait "$bench_pid"
  bench_row "$name+player" "$run" "$name-player-r$run.json"
  stop_node
}

for run in $(seq 1 "$RUNS"); do
  # WHIP: the publishers wait out a ramp delay longer than the sampled window before the players.
  start_node
  bench "whip-r$run" --stream "whip-r$run" --ramp-delay $((WARM + WINDOW + 10)) &
  BENCH=$!
  PIDS+=("$BENCH")
  wait_live "whip-r$run"
  sleep "$WARM"
  sample whip "$run" "$NODE"
  wait "$BENCH"
  bench_row whip+player "$run" "whip-r$run.json"
  stop_node

  rtmp_case rtmp-v "$run" -an
  rtmp_case rtmp-av "$run"
done

python3 - "$N" <<'PY'
import csv, statistics, sys
n = int(sys.argv[1])
rows = [r for r in csv.reader(open("results.tsv"), delimiter="\t") if r and not r[0].startswith("#")]
cell = {(r[1], r[2]): float(r[4]) for r in rows if r[4] != "NA"}
pps = {}
for r in rows:
    if r[5] not in ("", "NA"):
        pps.setdefault(r[1], []).append(float(r[5]))
runs = sorted({r[2] for r in rows}, key=int)
cases = list(dict.fromkeys(r[1] for r in rows))
def fmt(vals):
    return ", ".join(f"{v:.2f}" for v in vals)
for case in cases:
    vals = [cell[(case, run)] * 1000 for run in runs if (case, run) in cell]
    extra = f", {statistics.median(pps[case]):.0f} packets/s sent per player" if case in pps else ""
    print(f"{case:16} {statistics.median(vals):7.2f} mcores per stream (runs: {fmt(vals)}){extra}")
def ratio(label, f):
    vals = []
    for run in runs:
        try:
            vals.append(f(lambda c: cell[(c, run)]))
        except (KeyError, ZeroDivisionError):
            pass
    if vals:
        print(f"{label:46} {statistics.median(vals):5.2f} (runs: {fmt(vals)})")
print("ratios per stream, each run's own WHIP figures, median over runs:")
ratio("rtmp-v+player / whip+player", lambda c: c("rtmp-v+player") / c("whip+player"))
ratio("rtmp-av+player / whip+player", lambda c: c("rtmp-av+player") / c("whip+player"))
ratio("(rtmp-av+player - rtmp-v+player) / whip", lambda c: (c("rtmp-av+player") - c("rtmp-v+player")) / c("whip"))
ratio("rtmp-v / whip (no players)", lambda c: c("rtmp-v") / c("whip"))
ratio("rtmp-av / whip (no players)", lambda c: c("rtmp-av") / c("whip"))
PY
echo "results in $O"
