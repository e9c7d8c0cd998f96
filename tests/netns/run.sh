#!/usr/bin/env bash
# Interop tests with clients that never use loopback ICE candidates (GStreamer/libnice, Firefox).
#
#   bash tests/netns/run.sh            (as root; scripts/test.sh runs it)
#
# Creates two network namespaces joined by a veth pair, and nothing else:
#   rtcdn-srv-$$  rtcdn0 10.77.0.1/24 + lo    rtcdn (RTCDN_BIN) and the node test runner
#   rtcdn-cli-$$  rtcdn0 10.77.0.2/24 + lo    GStreamer, Firefox and Chromium clients
# Neither namespace has a default route or any link to the host's namespace, so no test traffic
# can leave them. Both are deleted on exit (trap), after killing whatever still runs inside.
#
# If namespaces cannot be created (not root, no CAP_SYS_ADMIN, no `ip`), the node tests still
# run but report themselves as skipped, with the reason, so the TAP summary stays countable.
#
# Environment: RTCDN_BIN (default target/debug/rtcdn), RTCDN_LOG (server --log level),
# CHROMIUM_BIN (default /usr/bin/chromium), FIREFOX_BIN (default firefox-esr),
# RTCDN_NETNS_ONLY (a regular expression: run only the tests whose name matches it, through
# node's --test-name-pattern; e.g. RTCDN_NETNS_ONLY='origin -> edge').
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export RTCDN_BIN="$(realpath -m "${RTCDN_BIN:-$ROOT/target/debug/rtcdn}")"
only=()
if [ -n "${RTCDN_NETNS_ONLY:-}" ]; then only=(--test-name-pattern "$RTCDN_NETNS_ONLY"); fi

SRV="rtcdn-srv-$$"
CLI="rtcdn-cli-$$"
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
  cd "$HERE" && RTCDN_NETNS_SKIP="$1" node --test --test-concurrency=1 "${only[@]}" interop.test.mjs
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

set -e
# The veth pair is named rtcdn0 on both sides, NOT veth*: libnice silently ignores interfaces whose
# name starts with "veth" (also docker*, virbr*, ...) and then never finishes ICE gathering.
# The veth pair is created inside the server namespace and its peer moved straight into the
# client namespace: the host's namespace never holds either end.
ip -n "$SRV" link add rtcdn0 type veth peer name rtcdn0 netns "$CLI"
ip -n "$SRV" addr add 10.77.0.1/24 dev rtcdn0
ip -n "$CLI" addr add 10.77.0.2/24 dev rtcdn0
for ns in "$SRV" "$CLI"; do
  # IPv4 only: a fresh link's IPv6 address stays "tentative" (duplicate address detection)
  # for a moment, and libnice started in that moment was seen never to finish gathering.
  ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  ip -n "$ns" link set lo up
  ip -n "$ns" link set rtcdn0 up
done
set +e
# Wait until both ends report the link up (carrier), so the first client gathers on it.
for _ in $(seq 50); do
  if ip -n "$SRV" link show rtcdn0 | grep -q 'state UP' && ip -n "$CLI" link show rtcdn0 | grep -q 'state UP'; then
    break
  fi
  sleep 0.1
done
echo "tests/netns: namespaces $SRV (10.77.0.1) and $CLI (10.77.0.2) ready"

cd "$HERE"
RTCDN_NETNS_SRV="$SRV" RTCDN_NETNS_CLI="$CLI" RTCDN_SRV_IP=10.77.0.1 RTCDN_CLI_IP=10.77.0.2 \
  ip netns exec "$SRV" node --test --test-concurrency=1 "${only[@]}" interop.test.mjs
rc=$?
exit $rc
