#!/usr/bin/env bash
# rtcdn and Janus side by side: the same bench players (WHEP, the same shaped 2.5 Mbit/s
# stream) on each server in one run, server CPU per delivered packet, medians of 3.
#
# Usage: bench/scripts/peer-janus.sh [OUT_DIR]   (root; after cargo build --release --bins)
#   PLAYERS="10 100"   the points;  EVENT_LOOPS=N   Janus's event_loops (default: its own 0,
#   a thread per viewer);  WINDOW=S  measured seconds per run (default 5; the CPU time is read
#   in 10 ms ticks, so a light point needs a longer window);  KEEP=1  leave the namespace.
#
# Janus 1.1 (Debian's `janus`) serves its streaming plugin's RTP mountpoints, fed by the bench
# as plain RTP (--rtp-publish), and is played through bench/scripts/whep-janus-shim.py (WHEP
# has the viewer offer; the plugin only offers). rtcdn gets the same stream over WHIP. Janus
# (libnice) never offers loopback candidates, so everything runs in a network namespace of its
# own with a veth address (10.77.0.1); rtcdn runs in it too, so both take the same kernel path.
# Keep the machine otherwise idle while it runs (~3 minutes).
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
B=${B:-${CARGO_TARGET_DIR:-$ROOT/target}/release}
O=${1:-$(mktemp -d /tmp/rtcdn-peer-janus.XXXXXX)}
PLAYERS=${PLAYERS:-10 100}
NS=rtcdn-peer-janus
ADDR=10.77.0.1
RTP_BASE=5000
mkdir -p "$O"
O=$(cd "$O" && pwd)

[ "$(id -u)" = 0 ] || { echo "peer-janus.sh: needs root (a network namespace)" >&2; exit 2; }
for bin in rtcdn rtcdn-bench; do
  [ -x "$B/$bin" ] || { echo "peer-janus.sh: no $B/$bin (cargo build --release --bins)" >&2; exit 2; }
done
if ! command -v janus > /dev/null; then
  echo "installing janus" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends janus > "$O/apt.log" 2>&1 \
    || { echo "peer-janus.sh: apt-get install janus failed (see $O/apt.log)" >&2; exit 2; }
fi
# .../janus/plugins/libjanus_streaming.so -> .../janus
JANUS_LIB=$(dirname "$(dirname "$(dpkg -L janus | grep -m1 'janus/plugins/libjanus_streaming.so$')")")
JANUS_TRANSPORTS=$JANUS_LIB/transports

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2> /dev/null; done
  wait 2> /dev/null
  [ "${KEEP:-0}" = 1 ] || ip netns del $NS 2> /dev/null
}
trap cleanup EXIT
ip netns del $NS 2> /dev/null
ip netns add $NS
ip -n $NS link set lo up
ip -n $NS link add v0 type veth peer name v1
ip -n $NS addr add $ADDR/24 dev v0
ip -n $NS addr add 10.77.0.2/24 dev v1
ip -n $NS link set v0 up
ip -n $NS link set v1 up
# (Background servers are started with `ip netns exec` itself, not this function, so that
# $! is the server's own pid, whose CPU the bench reads.)
in_ns() { ip netns exec $NS "$@"; }

# Janus: only the streaming plugin and the HTTP transport, ICE-lite on the veth address, one
# mountpoint per bench stream (the largest point plays one stream; ids from 1).
J=$O/janus
mkdir -p "$J"
cat > "$J/janus.jcfg" << EOF
general: {
	configs_folder = "$J"
	plugins_folder = "$JANUS_LIB/plugins"
	transports_folder = "$JANUS_TRANSPORTS"
	events_folder = "$JANUS_LIB/events"
	loggers_folder = "$JANUS_LIB/loggers"
	debug_level = 3
	session_timeout = 0
	${EVENT_LOOPS:+event_loops = $EVENT_LOOPS}
}
nat: {
	ice_lite = true
	ice_enforce_list = "$ADDR"
}
media: {
	rtp_port_range = "20000-40000"
}
plugins: {
	disable = "libjanus_audiobridge.so,libjanus_echotest.so,libjanus_recordplay.so,libjanus_sip.so,libjanus_nosip.so,libjanus_textroom.so,libjanus_videocall.so,libjanus_videoroom.so,libjanus_voicemail.so,libjanus_duktape.so,libjanus_lua.so"
}
transports: {
	disable = "libjanus_websockets.so,libjanus_pfunix.so,libjanus_mqtt.so,libjanus_nanomsg.so,libjanus_rabbitmq.so"
}
events: {
	broadcast = false
}
loggers: {
	disable = "libjanus_jsonlog.so"
}
EOF
cat > "$J/janus.transport.http.jcfg" << EOF
general: {
	http = true
	port = 8088
	ip = "$ADDR"
	base_path = "/janus"
	https = false
}
admin: {
	admin_http = false
}
EOF
cat > "$J/janus.plugin.streaming.jcfg" << EOF
general: {
}
bench-0: {
	type = "rtp"
	id = 1
	description = "rtcdn-bench stream 0"
	audio = true
	video = true
	audioport = $((RTP_BASE + 2))
	audiopt = 111
	audiocodec = "opus"
	videoport = $RTP_BASE
	videopt = 96
	videocodec = "vp8"
}
EOF
ip netns exec $NS janus -F "$J" -C "$J/janus.jcfg" > "$O/janus.log" 2>&1 &
JANUS=$!
PIDS+=($JANUS)
ip netns exec $NS python3 "$ROOT/bench/scripts/whep-janus-shim.py" --listen $ADDR:8090 \
  --janus http://$ADDR:8088/janus --stream janus > "$O/shim.log" 2>&1 &
PIDS+=($!)
printf '[media]\ntcp_max_connections_per_ip = 0\n' > "$O/rtcdn.toml"
ip netns exec $NS "$B/rtcdn" --config "$O/rtcdn.toml" --http 127.0.0.1:18700 --udp-port-base 47000 \
  --media-threads 1 --log warn > "$O/rtcdn.log" 2>&1 &
RTCDN=$!
PIDS+=($RTCDN)
for _ in $(seq 50); do
  in_ns curl -s -o /dev/null http://$ADDR:8088/janus/info && in_ns curl -s -o /dev/null http://127.0.0.1:18700/api/stats && break
  sleep 0.2
done

bench() { # out args...
  local out=$1
  shift
  in_ns "$B/rtcdn-bench" --seconds "${WINDOW:-5}" --repeat 3 --quiet --json --setup-timeout 30 "$@" > "$O/$out.json" 2> "$O/$out.err"
}
median() { # file key
  python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); m=r.get("median", r); v=m.get(sys.argv[2]); print("" if v is None else v)' "$1" "$2" 2> /dev/null
}
printf '%-8s %14s %14s %8s %14s %14s\n' players rtcdn_ns/pkt janus_ns/pkt ratio rtcdn_in_pps janus_in_pps
for M in $PLAYERS; do
  bench rtcdn-$M --server http://127.0.0.1:18700 --server-pid $RTCDN --players $M --stream r$M
  bench janus-$M --server http://$ADDR:8090 --server-pid $JANUS --players $M --stream janus \
    --rtp-publish $ADDR:$RTP_BASE
  r=$(median "$O/rtcdn-$M.json" server_cpu_ns_per_packet)
  j=$(median "$O/janus-$M.json" server_cpu_ns_per_packet)
  ratio=$(python3 -c 'import sys; r, j = map(float, sys.argv[1:]); print("%.1f" % (j / r))' "$r" "$j" 2> /dev/null)
  printf '%-8s %14s %14s %8s %14s %14s\n' "$M" "${r%.*}" "${j%.*}" "${ratio:-?}" \
    "$(median "$O/rtcdn-$M.json" in_pps)" "$(median "$O/janus-$M.json" in_pps)"
done
echo "reports in $O"
