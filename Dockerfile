# syntax=docker/dockerfile:1
#
# The one Task Sync image: `api`, `sync-worker` and `taskctl`; docker-compose.yml builds it once
# (as `tasksync:local`) and picks the binary with `command:`. Dependencies are compiled in their
# own layer (cargo-chef), so editing the workspace's sources only rebuilds the workspace crates.
#
# Base images are pinned to exact tags (the Rust toolchain and Debian snapshot), cargo-chef to an
# exact version. To pin by content as well, append the digest that
# `docker buildx imagetools inspect rust:1.98.0-slim-bookworm` prints (`FROM rust:…@sha256:…`).

ARG RUST_IMAGE=rust:1.98.0-slim-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-20260803-slim
ARG CARGO_CHEF_VERSION=0.1.78

# --- planner: reduce the workspace to a recipe of its manifests and lockfile -------------------
FROM ${RUST_IMAGE} AS chef
ARG CARGO_CHEF_VERSION
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME:-/usr/local/cargo}/registry"
WORKDIR /app

FROM chef AS planner
# The whole context (filtered by .dockerignore): the workspace manifest names every member,
# the tests crate included, and cargo refuses to load it if one is missing.
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# --- builder: dependencies first (cached while recipe.json is unchanged), then the binaries ---
FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json -p api -p sync-worker -p taskctl
COPY . .
RUN cargo build --release --locked -p api -p sync-worker -p taskctl \
    && mkdir -p /out \
    && cp target/release/api target/release/sync-worker target/release/taskctl /out/

# --- runtime: just the binaries, CA certificates and an unprivileged user ----------------------
FROM ${RUNTIME_IMAGE} AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tasksync \
    && useradd --system --uid 10001 --gid tasksync --no-create-home --shell /usr/sbin/nologin tasksync
COPY --from=builder /out/api /out/sync-worker /out/taskctl /usr/local/bin/
USER 10001:10001
ENV RUST_LOG=info \
    HOST=0.0.0.0 \
    PORT=3000
EXPOSE 3000
# No HEALTHCHECK here: the image runs any of its binaries, and each probes itself (`api healthcheck`,
# `sync-worker healthcheck`, no curl or shell needed); docker-compose.yml sets one per service.
CMD ["api"]
