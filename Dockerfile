# rain-node's image: `docker build -t rain-node .`
#
# Three stages: the dependencies alone (cached until Cargo.toml or Cargo.lock
# change), the build, and a slim runtime. Configuration only through the
# environment (see the README's settings table); secrets through `*_FILE`
# variables naming Docker secrets (API_TOKENS_FILE, REDIS_SERVER_FILE, …).

# --- 1. dependencies: built once per Cargo.lock, against a dummy crate -------
# Any stable Rust at or above the crate's rust-version (1.88); bookworm, as the runtime.
FROM rust:1-slim-bookworm AS deps
WORKDIR /build
COPY Cargo.toml Cargo.lock ./
# The manifest names benches; a stub for each one it names (read from the
# manifest, so a new bench needs no edit here) lets cargo read it without
# their sources.
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && awk '/^\[\[bench\]\]/ { bench = 1 } bench && $1 == "name" { gsub(/"/, "", $3); print $3; bench = 0 }' Cargo.toml \
        | while read -r name; do echo 'fn main() {}' > "benches/$name.rs"; done \
    && cargo build --release --locked --bin rain-node \
    && rm -rf src benches

# --- 2. the build ---------------------------------------------------------------
FROM deps AS build
COPY src ./src
COPY redis ./redis
COPY benches ./benches
# The dummy's artefacts must not pass for the real crate's.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin rain-node \
    && cp target/release/rain-node /usr/local/bin/rain-node

# --- 3. runtime -----------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ca-certificates: the roots a TLS connection (rediss://) is verified against.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 rain \
    && useradd --system --uid 10001 --gid rain --create-home --home-dir /home/rain \
        --shell /usr/sbin/nologin rain
COPY --from=build /usr/local/bin/rain-node /usr/local/bin/rain-node
# Listen on every interface of the container; the API listener (3001) is for
# the private network only: publish 3000 alone.
ENV SERVER_HOST=0.0.0.0 SERVER_PORT=3000 ADMIN_HOST=0.0.0.0 ADMIN_PORT=3001
EXPOSE 3000 3001
# Numeric, so an orchestrator can tell it is not root without reading /etc/passwd.
USER 10001:10001
WORKDIR /home/rain
# `rain-node healthcheck` GETs /healthz on SERVER_PORT (no curl in slim images).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["rain-node", "healthcheck"]
# SIGTERM starts the graceful shutdown (bounded by SHUTDOWN_TIMEOUT_MS).
STOPSIGNAL SIGTERM
ENTRYPOINT ["rain-node"]
