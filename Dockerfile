# syntax=docker/dockerfile:1
# rtcdn in a container: a multi-stage build (the Rust toolchain stays in the build stage) and a
# small runtime image (distroless: glibc, CA certificates, no shell; the binary is built with the
# `dist` profile, without debug info).
#
#   docker build -t rtcdn .
#   docker run --rm --network host rtcdn --http 0.0.0.0:8080 --media-bind 0.0.0.0 --announce HOST_IP
#
# Media is UDP on one port per media thread from --udp-port-base (31000 by default; --media-threads
# N fixes how many). With published ports instead of --network host, publish that UDP range too
# and --announce the address clients reach (the host's), since ICE candidates name it.
#
# io_uring: Docker's default seccomp profile blocks io_uring_setup (and io_uring_enter), so inside
# a default container each media socket logs
#   io_uring unavailable, media socket falls back to recvmmsg/sendmmsg
# and runs on the mmsg backend, which needs nothing special. To get io_uring, run with a seccomp
# profile that allows the io_uring syscalls (or --security-opt seccomp=unconfined where that is
# acceptable).

# The workspace asks for Rust >= 1.85 (rust-version); the build stage takes the current stable.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

FROM ${RUST_IMAGE} AS build
WORKDIR /src
# `rtcdn --version` and rtcdn_build_info name the git revision; the build context has no .git
# (.dockerignore), so pass it: --build-arg RTCDN_GIT_REVISION=$(git rev-parse --short=12 HEAD).
ARG RTCDN_GIT_REVISION=unknown
ENV RTCDN_GIT_REVISION=${RTCDN_GIT_REVISION}
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --locked --profile dist -p rtcdn \
    && install -D target/dist/rtcdn /out/rtcdn

FROM ${RUNTIME_IMAGE}
COPY --from=build /out/rtcdn /usr/local/bin/rtcdn
COPY config/standalone.toml config/origin.toml config/edge.toml /etc/rtcdn/
# HTTP (WHIP/WHEP, WebSocket, the console), RTMP ingest, and media (one UDP port per media thread).
EXPOSE 8080/tcp 1935/tcp 31000-31015/udp
USER nonroot
ENTRYPOINT ["/usr/local/bin/rtcdn"]
# Listen beyond the container's loopback; add --announce with the address clients reach.
CMD ["--http", "0.0.0.0:8080", "--media-bind", "0.0.0.0", "--rtmp", "0.0.0.0:1935"]
