#!/usr/bin/env bash
# Builds the Dockerfile's image and smoke-tests it: `--version`, then a container whose HTTP port
# is published on 127.0.0.1 only must serve the built-in page, the console and /api/stats, and
# its media sockets must have come up (on io_uring or, under Docker's default seccomp profile,
# on the mmsg backend). Runs only where a Docker engine answers (`docker info`); elsewhere it says
# so and exits 0. Called by scripts/test.sh; SKIP_DOCKER=1 skips it.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${SKIP_DOCKER:-0}" = 1 ]; then
  echo "SKIP_DOCKER=1: skipping the Docker image smoke test"
  exit 0
fi
if ! command -v docker >/dev/null 2>&1; then
  echo "no docker command on this machine: skipping the Docker image smoke test"
  exit 0
fi
if ! docker info >/dev/null 2>&1; then
  echo "docker info failed (no Docker engine reachable): skipping the Docker image smoke test"
  exit 0
fi

image="rtcdn:smoke-$$"
name="rtcdn-smoke-$$"
cleanup() {
  docker rm -f "$name" >/dev/null 2>&1 || true
  docker image rm "$image" >/dev/null 2>&1 || true
}
trap cleanup EXIT

revision="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
echo "--- docker build ($image, revision $revision)"
docker build --build-arg "RTCDN_GIT_REVISION=$revision" -t "$image" .
echo "--- image size: $(docker image inspect -f '{{.Size}}' "$image") bytes"

version="$(docker run --rm "$image" --version)"
echo "--- rtcdn --version in the image: $version"
case "$version" in
  *"$revision"*) ;;
  *) echo "the image's --version does not name revision $revision" >&2; exit 1 ;;
esac

# One media thread on a fixed port; HTTP published on loopback only, on a port the kernel picks.
docker run -d --name "$name" -p 127.0.0.1::8080 "$image" \
  --http 0.0.0.0:8080 --media-bind 0.0.0.0 --media-threads 1 --rtmp off >/dev/null
port="$(docker port "$name" 8080/tcp | head -n1 | sed 's/.*://')"
base="http://127.0.0.1:$port"
echo "--- container $name serves on $base"
ok=0
for _ in $(seq 1 60); do
  if curl -fsS -o /dev/null "$base/"; then ok=1; break; fi
  sleep 0.5
done
if [ "$ok" != 1 ]; then
  echo "the container never answered GET /; its log:" >&2
  docker logs "$name" >&2 || true
  exit 1
fi
for path in / /console /api/stats /api/streams; do
  code="$(curl -s -o /dev/null -w '%{http_code}' "$base$path")"
  echo "GET $path -> $code"
  if [ "$code" != 200 ]; then docker logs "$name" >&2 || true; exit 1; fi
done
logs="$(docker logs "$name" 2>&1)"
if grep -q "falls back to recvmmsg/sendmmsg" <<<"$logs"; then
  echo "media backend: mmsg (io_uring blocked, as Docker's default seccomp profile does)"
elif grep -q "uses io_uring" <<<"$logs"; then
  echo "media backend: io_uring"
else
  echo "the container's log names no media backend:" >&2
  echo "$logs" >&2
  exit 1
fi
echo "docker smoke test passed"
