# syntax=docker/dockerfile:1
# The agent endpoint (`host serve`), configured by environment variables only
# (deploy/README.md has the table). From the repository root:
#   docker build -f deploy/host.Dockerfile -t airlock-host .
# The operator policy and the Cedar policies are part of the image
# (deploy/config/): reviewed, versioned and immutable like the code.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p airlock-host --bin host \
 && install -D target/release/host /out/usr/local/bin/host \
 && install -d -o 65532 -g 65532 /out/var/cache/airlock

# glibc and libgcc only (TLS is rustls): no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
COPY deploy/config/policy.toml deploy/config/policies.cedar /etc/airlock/
ENV AIRLOCK_POLICY=/etc/airlock/policy.toml \
    AIRLOCK_AUTHORIZATION=/etc/airlock/policies.cedar \
    AIRLOCK_LISTEN=0.0.0.0:8080 \
    AIRLOCK_MCP_LISTEN=off \
    AIRLOCK_COMPILE_CACHE=/var/cache/airlock \
    AIRLOCK_AUDIT=stdout
USER 65532:65532
EXPOSE 8080 8081 9090
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s CMD ["/usr/local/bin/host", "ping"]
# SIGTERM: calls in flight finish (up to limits.drain_secs), new ones are refused.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/host", "serve"]
