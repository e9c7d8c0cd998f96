#!/usr/bin/env bash
# Interop tests with clients that never use loopback ICE candidates (GStreamer/libnice, Firefox).
#
#   bash tests/netns/run.sh            (as root; scripts/test.sh runs it)
#   (interop.test.mjs, turn.test.mjs and relay_tcp.test.mjs, in the server namespace)
#
# Creates four network namespaces joined by veth pairs (the server to the client, the throttled
# and the TURN one; the TURN one also to the client), and nothing else:
#   rtcdn-srv-$$  rtcdn0 10.77.0.1/24, rtcdn1 10.77.1.1/24 + lo
#                                             rtcdn (RTCDN_BIN) and the node test runner
#   rtcdn-cli-$$  rtcdn0 10.77.0.2/24 + lo    GStreamer, Firefox and Chromium clients
#   rtcdn-thr-$$  rtcdn0 10.77.1.2/24 + lo    a Chromium player behind a bottleneck: the throttle
#                                             test puts a tbf qdisc on the server's rtcdn1
#   rtcdn-trn-$$  rtcdn0 10.77.2.2/24 (to the server's rtcdn2, 10.77.2.1),
#                 rtcdn1 10.77.3.1/24 (to the client's rtcdn3, 10.77.3.2) + lo
#                                             coturn (turn.test.mjs): listens on 10.77.3.1,
#                                             relays from 10.77.2.2. The server's rtcdn2 and the
#                                             client's rtcdn3 stay down but during that test, so
#                                             the other tests see the same interfaces as before.
# Only the throttled namespace has a route beyond its /24: default via 10.77.1.1, the server
# namespace, which owns 10.77.0.1 (the address rtcdn listens on) and forwards nothing
# (net.ipv4.ip_forward=0, checked below), so the throttled player reaches rtcdn and nothing else
# (not even the client namespace). The TURN namespace forwards nothing either: only coturn, a
# program, carries the client's media to the server's 10.77.2.1. No namespace has any link to
# the host's namespace, so no test traffic can leave them. All are deleted on exit (trap), after killing whatever still runs inside.
#
# If namespaces cannot be created (not root, no CAP_SYS_ADMIN, no `ip`), the node tests still
# run but report themselves as skipped, with the reason, so the TAP summary stays countable.
#
# Environment: RTCDN_BIN (default target/debug/rtcdn), RTCDN_LOG (server --log level),
# CHROMIUM_BIN (default /usr/bin/chromium), FIREFOX_BIN (default firefox-esr),
# RTCDN_NETNS_ONLY (a regular expression: run only the tests whose name matches it, through
# node's --test-name-pattern; e.g. RTCDN_NETNS_ONLY='origin -> edge'), RTCDN_NETNS_THR_RATE (the
# throttle test's tbf rate, default 300kbit; "none" runs it without a bottleneck: it must fail).
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export RTCDN_BIN="$(realpath -m "${RTCDN_BIN:-$ROOT/target/debug/rtcdn}")"
only=()
if [ -n "${RTCDN_NETNS_ONLY:-}" ]; then only=(--test-name-pattern "$RTCDN_NETNS_ONLY"); fi

SRV="rtcdn-srv-$$"
CLI="rtcdn-cli-$$"
THR="rtcdn-thr-$$"
TRN="rtcdn-trn-$$"
created=()

cleanup() {
  local ns pid
  for ns in "${created[@]}"; do
    # Anything still running inside our namespaces was started by this run.
    for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
  done
  for ns in "${created[@]}"; do ip netns del "$ns" 2>/dev/null || true; done
  created=()
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

run_skipped() {
  echo "tests/netns: SKIPPING the namespace interop tests: $1" >&2
  cd "$HERE" && RTCDN_NETNS_SKIP="$1" node --test --test-concurrency=1 "${only[@]}" interop.test.mjs turn.test.mjs relay_tcp.test.mjs
  exit $?
}

if ! command -v ip >/dev/null 2>&1; then
  run_skipped "the ip command (iproute2) is missing"
fi
if ! err=$(ip netns add "$SRV" 2>&1); then
  run_skipped "cannot create a network namespace (need root / CAP_SYS_ADMIN): ip netns add: $err"
fi
created+=("$SRV")
if ! err=$(ip netns add "$CLI" 2>&1); then
  run_skipped "cannot create a second network namespace: $err"
fi
created+=("$CLI")
if ! err=$(ip netns add "$THR" 2>&1); then
  run_skipped "cannot create a third network namespace: $err"
fi
created+=("$THR")
if ! err=$(ip netns add "$TRN" 2>&1); then
  run_skipped "cannot create a fourth network namespace: $err"
fi
created+=("$TRN")

set -e
# The veth pair is named rtcdn0 on both sides, NOT veth*: libnice silently ignores interfaces whose
# name starts with "veth" (also docker*, virbr*, ...) and then never finishes ICE gathering.
# The veth pair is created inside the server namespace and its peer moved straight into the
# client namespace: the host's namespace never holds either end.
ip -n "$SRV" link add rtcdn0 type veth peer name rtcdn0 netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/24 dev rtcdn0
ip -n "$CLI" addr add 10.77.0.2/24 dev rtcdn0
# The throttled player's link: rtcdn1 on the server side (its egress is the server -> player
# direction, where the throttle test puts its tbf qdisc), rtcdn0 in the throttled namespace.
ip -n "$SRV" link add rtcdn1 type veth peer name rtcdn0 netns "$THR"
ip -n "$SRV" addr add 10.77.1.1/24 dev rtcdn1
ip -n "$THR" addr add 10.77.1.2/24 dev rtcdn0
# The TURN server's two links; it relays as a program, the kernel forwards nothing.
ip -n "$SRV" link add rtcdn2 type veth peer name rtcdn0 netns "$TRN"
ip -n "$SRV" addr add 10.77.2.1/24 dev rtcdn2
ip -n "$TRN" addr add 10.77.2.2/24 dev rtcdn0
ip -n "$CLI" link add rtcdn3 type veth peer name rtcdn1 netns "$TRN"
ip -n "$CLI" addr add 10.77.3.2/24 dev rtcdn3
ip -n "$TRN" addr add 10.77.3.1/24 dev rtcdn1
ip netns exec "$SRV" sysctl -qw net.ipv4.ip_forward=0
ip netns exec "$TRN" sysctl -qw net.ipv4.ip_forward=0
for ns in "$SRV" "$CLI" "$THR" "$TRN"; do
  # IPv4 only: a fresh link's IPv6 address stays "tentative" (duplicate address detection)
  # for a moment, and libnice started in that moment was seen never to finish gathering.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link set lo up
  ip -n "$ns" link set rtcdn0 up
done
ip -n "$SRV" link set rtcdn1 up
ip -n "$TRN" link set rtcdn1 up
ip -n "$THR" route add default via 10.77.1.1 dev rtcdn0
set +e
# Wait until every end reports the link up (carrier), so the first client gathers on it.
links_up() {
  local l
  for l in "$SRV rtcdn0" "$CLI rtcdn0" "$SRV rtcdn1" "$THR rtcdn0"; do
    set -- $l
    ip -n "$1" link show "$2" | grep -q 'state UP' || return 1
  done
}
for _ in $(seq 50); do
  if links_up; then break; fi
  sleep 0.1
done
# The server namespace must not forward (the throttled namespace's default route ends there),
# nor the TURN one (only coturn may carry the client's media to the server).
for ns in "$SRV" "$TRN"; do
  if [ "$(ip netns exec "$ns" sysctl -n net.ipv4.ip_forward)" != 0 ]; then
    echo "tests/netns: net.ipv4.ip_forward is not 0 in $ns" >&2
    exit 1
  fi
done
echo "tests/netns: namespaces $SRV (10.77.0.1, 10.77.1.1, 10.77.2.1), $CLI (10.77.0.2, 10.77.3.2), $THR (10.77.1.2) and $TRN (10.77.2.2, 10.77.3.1) ready"

cd "$HERE"
RTCDN_NETNS_SRV="$SRV" RTCDN_NETNS_CLI="$CLI" RTCDN_SRV_IP=10.77.0.1 RTCDN_CLI_IP=10.77.0.2 \
  RTCDN_NETNS_THR="$THR" RTCDN_THR_IP=10.77.1.2 RTCDN_THR_GW=10.77.1.1 RTCDN_THR_DEV=rtcdn1 \
  RTCDN_NETNS_TRN="$TRN" \
  ip netns exec "$SRV" node --test --test-concurrency=1 "${only[@]}" interop.test.mjs turn.test.mjs relay_tcp.test.mjs
rc=$?
exit $rc
