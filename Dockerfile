# syntax=docker/dockerfile:1
# The CapLiquify service: a release build in a Rust image, run from Debian slim as a
# non-root user with only the binary and the CA roots (docs/deploy.md, "Container image").
#
#   docker build -t capliquify .                     # or: buildah build -t capliquify .
#   docker run -e DATABASE_URL=… -e ENCRYPTION_KEY=… -p 8080:8080 capliquify
#
# scripts/container-build.sh builds the same runtime stage from a binary built on the host
# (BINARY_FROM=context), for machines where the Rust image cannot be fetched.

ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim
ARG BINARY_FROM=builder

FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Dependencies alone first: this layer is reused until Cargo.toml or Cargo.lock change.
# The stubs stand in for every target the manifest names (each [[bench]]'s name is read
# from Cargo.toml, so a new bench needs no change here).
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src benches \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && for bench in $(sed -n '/^\[\[bench\]\]/{n;s/^name = "\(.*\)"$/\1/p}' Cargo.toml); do \
           echo 'fn main() {}' > "benches/$bench.rs"; \
       done \
    && echo 'fn main() {}' > build.rs \
    && cargo build --release --locked \
    && rm -rf src benches build.rs target/release/.fingerprint/capliquify-*
COPY build.rs ./
COPY migrations migrations
# The embedded demo's public signing key is compiled in (src/http/auth.rs).
COPY dev dev
COPY benches benches
COPY src src
RUN cargo build --release --locked --bin capliquify \
    && cp target/release/capliquify /capliquify

# The binary alone: built above (default), or built elsewhere and taken from the build
# context (`--build-arg BINARY_FROM=context --build-arg BINARY=path/in/context`).
FROM scratch AS context
ARG BINARY=target/release/capliquify
COPY ${BINARY} /capliquify

FROM ${BINARY_FROM} AS binary

FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates: the system roots for TLS to PostgreSQL (sslmode=verify-full) and to
# Clerk's JWKS endpoint (a base that has them already needs no package index). The user is
# written directly: minimal bases lack useradd. The service handles SIGTERM itself
# (graceful shutdown: in-flight requests finish) and starts no child processes in
# production, so it runs as PID 1 without an init.
RUN if ! dpkg -s ca-certificates >/dev/null 2>&1; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && rm -rf /var/cache/apt/* /var/cache/debconf/*-old /var/log/* \
    && echo 'capliquify:x:10001:10001:CapLiquify:/nonexistent:/usr/sbin/nologin' >> /etc/passwd \
    && echo 'capliquify:x:10001:' >> /etc/group
COPY --from=binary /capliquify /usr/local/bin/capliquify
USER 10001:10001
ENV CAPLIQUIFY_LISTEN=0.0.0.0:8080 \
    CAPLIQUIFY_LOG_FORMAT=json
EXPOSE 8080
# /readyz answers 200 when the database is reachable and migrated. bash's /dev/tcp keeps
# curl out of the image; the port is CAPLIQUIFY_LISTEN's.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${CAPLIQUIFY_LISTEN##*:} && printf 'GET /readyz HTTP/1.0\\r\\nHost: localhost\\r\\n\\r\\n' >&3 && head -n1 <&3 | grep -q ' 200 '"]
# A command, not an entrypoint: `docker run … capliquify migrate`, and platforms that
# replace the command (Render's dockerCommand, preDeployCommand) name the binary.
CMD ["capliquify", "serve"]
