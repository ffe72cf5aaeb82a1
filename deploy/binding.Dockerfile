# syntax=docker/dockerfile:1
# The Session Binding Service, configured by AIRLOCK_BINDING_* variables
# (deploy/README.md). From the repository root:
#   docker build -f deploy/binding.Dockerfile -t airlock-binding .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p airlock-binding --bin binding-service \
 && install -D target/release/binding-service /out/usr/local/bin/binding-service

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/ /
ENV AIRLOCK_BINDING_LISTEN=0.0.0.0:8080 \
    AIRLOCK_AUDIT=stdout
USER 65532:65532
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s CMD ["/usr/local/bin/binding-service", "--ping"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/binding-service"]
