#!/usr/bin/env bash
# The one test command: bash scripts/test.sh
# Works on a fresh Debian-based machine (root, Rust toolchain, node/npm): installs Debian's
# chromium, ffmpeg and redis-server if missing, npm-installs the browser test deps from the
# lockfile, then runs cargo build, cargo test, a short fuzz pass (if fuzz/ has targets), the
# browser tests and, where Docker runs, the container image's smoke test.
#
# Environment knobs:
#   FUZZ_SECONDS=N      seconds per fuzz target (default 5; 0 skips running, still builds)
#   SKIP_FUZZ=1         skip the fuzz stage
#   SKIP_BROWSER=1      skip the browser stage (and the netns interop stage, which uses chromium)
#   SKIP_NETNS=1        skip the netns interop stage (GStreamer, Firefox; tests/netns/run.sh)
#   RTCDN_SKIP_E2E=1    run only the server-less browser checks
#   SKIP_DOCKER=1       skip the Docker image build and smoke test (it skips itself without an engine)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/rtcdn-test.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

PASSED=0
FAILED=0
SKIPPED=0

banner() {
  printf '\n==================== %s ====================\n' "$*"
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "need root to run: $*" >&2; return 1
  fi
}

# Adds the counts from a cargo test log ("test result: ok. 3 passed; 0 failed; 1 ignored; ...").
count_cargo() {
  local p f i
  p=$(grep -E '^test result:' "$1" | grep -Eo '[0-9]+ passed' | awk '{s+=$1} END {print s+0}' || true)
  f=$(grep -E '^test result:' "$1" | grep -Eo '[0-9]+ failed' | awk '{s+=$1} END {print s+0}' || true)
  i=$(grep -E '^test result:' "$1" | grep -Eo '[0-9]+ ignored' | awk '{s+=$1} END {print s+0}' || true)
  PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + i))
}

# Adds the counts from node's TAP summary ("# pass 3", "# fail 0", "# skipped 1").
count_node() {
  local p f s
  p=$(awk '/^# pass /{s+=$3} END {print s+0}' "$1")
  f=$(awk '/^# fail /{s+=$3} END {print s+0}' "$1")
  s=$(awk '/^# skipped /{s+=$3} END {print s+0}' "$1")
  PASSED=$((PASSED + p)); FAILED=$((FAILED + f)); SKIPPED=$((SKIPPED + s))
}

banner "toolchain"
# Incremental caches double the size of a one-shot build and buy nothing on a clean clone.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
# A full run needs a few GB of disk (debug build, fuzz build, browser profiles); say so up
# front instead of failing later with a linker's "No space left on device".
mkdir -p "$TARGET_DIR"
free_kb=$(df -Pk "$TARGET_DIR" | awk 'NR==2 {print $4}')
echo "free disk at $TARGET_DIR: $((free_kb / 1024)) MB"
if [ "${free_kb:-0}" -lt $((4 * 1024 * 1024)) ]; then
  echo "WARNING: less than 4 GB free; the build may run out of disk" >&2
fi
cargo --version
rustc --version
node --version
npm --version

if [ "${SKIP_BROWSER:-0}" != 1 ]; then
  banner "chromium"
  if [ ! -x /usr/bin/chromium ]; then
    echo "/usr/bin/chromium missing: installing Debian's chromium"
    as_root apt-get update
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium
  fi
  # The Debian launcher script prints a harmless shell warning on some machines; hide it.
  /usr/bin/chromium --version 2>/dev/null

  banner "npm ci (tests/browser)"
  stamp_file="tests/browser/node_modules/.rtcdn-lock-stamp"
  want_stamp="$(cat tests/browser/package-lock.json tests/browser/package.json | sha256sum | cut -d' ' -f1) node-$(node --version)"
  if [ ! -d tests/browser/node_modules ] || [ "$(cat "$stamp_file" 2>/dev/null || true)" != "$want_stamp" ]; then
    (cd tests/browser && npm ci --no-audit --no-fund)
    printf '%s\n' "$want_stamp" > "$stamp_file"
  else
    echo "node_modules up to date"
  fi
fi

if ! command -v ffmpeg >/dev/null 2>&1; then
  # The RTMP ingest tests publish with the encoder users have.
  echo "ffmpeg missing: installing Debian's ffmpeg"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ffmpeg
fi

if ! command -v redis-server >/dev/null 2>&1; then
  # The cluster tests (tests/cluster_*.rs) start their own Redis on a loopback port.
  echo "redis-server missing: installing Debian's redis-server"
  as_root apt-get update
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends redis-server
fi

banner "cargo build --workspace --all-targets"
cargo build --workspace --all-targets

banner "cargo test --workspace"
cargo test --workspace 2>&1 | tee "$WORK/cargo-test.log"
count_cargo "$WORK/cargo-test.log"

banner "fuzz"
if [ "${SKIP_FUZZ:-0}" = 1 ]; then
  echo "SKIP_FUZZ=1: skipping"
elif [ ! -f fuzz/Cargo.toml ]; then
  echo "no fuzz/Cargo.toml yet: no fuzz targets, skipping"
else
  export RUSTC_BOOTSTRAP=1
  if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
  if [ "${#targets[@]}" -eq 0 ]; then
    echo "fuzz/ has no targets yet, skipping"
  else
    echo "targets: ${targets[*]}"
    cargo fuzz build --fuzz-dir fuzz
    secs="${FUZZ_SECONDS:-5}"
    if [ "$secs" -gt 0 ]; then
      for t in "${targets[@]}"; do
        echo "--- fuzz $t for ${secs}s"
        corpus="$WORK/corpus/$t"
        artifacts="$ROOT/fuzz/target/artifacts/$t"
        mkdir -p "$corpus" "$artifacts"
        seeds=()
        for d in "fuzz/corpus/seed-$t" "fuzz/corpus/$t"; do
          if [ -d "$d" ]; then seeds+=("$d"); fi
        done
        # New inputs go to a temporary corpus; committed seeds (if any) are only read.
        if ! cargo fuzz run --fuzz-dir fuzz "$t" "$corpus" "${seeds[@]}" -- \
            -max_total_time="$secs" -rss_limit_mb=4096 -artifact_prefix="$artifacts/"; then
          echo "fuzz target $t FAILED; reproducer in $artifacts/" >&2
          exit 1
        fi
      done
    fi
    if [ "${CI:-}" = true ]; then
      # A CI clone is thrown away: give the fuzz build's ~1.7 GB back before the browser stage.
      rm -rf fuzz/target/release fuzz/target/x86_64-unknown-linux-gnu
    fi
  fi
fi

if [ "${SKIP_BROWSER:-0}" = 1 ]; then
  banner "browser tests"
  echo "SKIP_BROWSER=1: skipping"
else
  banner "browser tests (headless chromium)"
  (cd tests/browser && RTCDN_BIN="$TARGET_DIR/debug/rtcdn" npm test) 2>&1 | tee "$WORK/browser.log"
  count_node "$WORK/browser.log"
fi

# Interop with clients that never use loopback ICE candidates (GStreamer/libnice, Firefox): the
# server, the clients and coturn run in network namespaces the test creates (see tests/netns/run.sh).
# Needs root (or CAP_SYS_ADMIN) for `ip netns add`; without it the tests report as skipped.
netns_deps_missing() {
  command -v ip >/dev/null 2>&1 || return 0
  command -v firefox-esr >/dev/null 2>&1 || return 0
  command -v gst-inspect-1.0 >/dev/null 2>&1 || return 0
  command -v nft >/dev/null 2>&1 || return 0
  command -v turnserver >/dev/null 2>&1 || return 0
  local e
  for e in webrtcbin nicesrc vp8enc vp8dec opusenc rtpvp8pay rtpopuspay videotestsrc; do
    gst-inspect-1.0 "$e" >/dev/null 2>&1 || return 0  # not --exists: it also wants version >= GStreamer's
  done
  /usr/bin/python3 -c "import gi; gi.require_version('GstWebRTC', '1.0'); gi.require_version('GstSdp', '1.0')" \
    >/dev/null 2>&1 || return 0
  return 1
}
if [ "${SKIP_BROWSER:-0}" = 1 ] || [ "${SKIP_NETNS:-0}" = 1 ]; then
  banner "netns interop tests"
  echo "SKIP_BROWSER=1 or SKIP_NETNS=1: skipping"
else
  banner "netns interop tests (GStreamer, Firefox ESR)"
  if netns_deps_missing; then
    if [ "$(id -u)" -eq 0 ] || command -v sudo >/dev/null 2>&1; then
      echo "installing Debian's GStreamer (webrtcbin, libnice), python3-gi, firefox-esr, iproute2, nftables, coturn"
      as_root apt-get update
      as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        iproute2 nftables coturn firefox-esr python3-gi gstreamer1.0-tools gstreamer1.0-plugins-base \
        gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-nice \
        gir1.2-gstreamer-1.0 gir1.2-gst-plugins-base-1.0 gir1.2-gst-plugins-bad-1.0
    else
      echo "GStreamer/Firefox/coturn missing and no root to install them: those tests will skip"
    fi
  fi
  netns_rc=0
  RTCDN_BIN="$TARGET_DIR/debug/rtcdn" bash tests/netns/run.sh 2>&1 | tee "$WORK/netns.log" || netns_rc=$?
  before_failed=$FAILED
  count_node "$WORK/netns.log"
  if [ "$netns_rc" -ne 0 ] && [ "$FAILED" -eq "$before_failed" ]; then
    echo "tests/netns/run.sh exited with $netns_rc without reporting a failed test" >&2
    FAILED=$((FAILED + 1))
  fi
fi

# The Dockerfile's image, built and smoke-tested where a Docker engine answers (`docker info`);
# elsewhere the stage says so and counts as skipped.
banner "docker image"
docker_rc=0
bash scripts/docker_smoke.sh 2>&1 | tee "$WORK/docker.log" || docker_rc=$?
if [ "$docker_rc" -ne 0 ]; then
  FAILED=$((FAILED + 1))
elif grep -q "^docker smoke test passed" "$WORK/docker.log"; then
  PASSED=$((PASSED + 1))
else
  SKIPPED=$((SKIPPED + 1))
fi

# What failed, with each failure's first line, repeated here because a CI page may show only
# the end of this output (tests print a lot before their verdict).
list_failures() {
  local log
  for log in "$WORK/cargo-test.log"; do
    [ -f "$log" ] || continue
    grep -E '^test .* \.\.\. FAILED$' "$log" | sed 's/^/  cargo: /' || true
    grep -E -A1 "^thread '.*' .*panicked at" "$log" | grep -vE '^(--|thread )' | head -c 300 | sed 's/^/    /' || true
  done
  for log in "$WORK/browser.log" "$WORK/netns.log"; do
    [ -f "$log" ] || continue
    # A TAP "not ok" line, then the first line of its error (after "error: |-" or inline).
    awk -v tag="$(basename "$log" .log)" '
      /^ *not ok / { sub(/^ */, ""); print "  " tag ": " substr($0, 1, 160); want = 1; next }
      want && /^ *error: *\|-?$/ { getline; sub(/^ */, ""); print "    " substr($0, 1, 200); want = 0; next }
      want && /^ *error: / { sub(/^ *error: */, ""); print "    " substr($0, 1, 200); want = 0 }
    ' "$log" | head -n 40
  done
}

banner "summary"
if [ "$FAILED" -ne 0 ]; then
  echo "Failed:"
  list_failures
fi
echo "Total: $PASSED passed, $FAILED failed, $SKIPPED skipped"
if [ "$FAILED" -ne 0 ]; then exit 1; fi
