# syntax=docker/dockerfile:1

# Build: cargo alone is enough, protoc is vendored.
FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY src src
RUN cargo build --release --locked --bin segmentd

# Run: a slim image and an unprivileged user that owns only /data.
FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --user-group --home-dir /data --no-create-home segmentd \
    && mkdir /data && chown 10001:10001 /data
COPY --from=build /src/target/release/segmentd /usr/local/bin/segmentd
USER 10001:10001
# The image never serves open: it needs a certificate and an access file
# mounted read-only, and refuses to start without them:
#   docker run -v segmentd-data:/data \
#     -v "$PWD/tls:/etc/segmentd/tls:ro" -v "$PWD/access:/etc/segmentd/access:ro" \
#     -p 50051:50051 segmentd
# Health is also served in plaintext on 8081, for probes that cannot speak TLS.
ENV SEGMENTD_LISTEN=0.0.0.0:50051 \
    SEGMENTD_DATA_DIR=/data \
    SEGMENTD_LOG_FORMAT=json \
    SEGMENTD_TLS_CERT=/etc/segmentd/tls/tls.crt \
    SEGMENTD_TLS_KEY=/etc/segmentd/tls/tls.key \
    SEGMENTD_AUTH_TOKENS=/etc/segmentd/access/access.json \
    SEGMENTD_REFLECTION=authenticated \
    SEGMENTD_HEALTH_LISTEN=0.0.0.0:8081 \
    SEGMENTD_METRICS_LISTEN=0.0.0.0:9090
VOLUME ["/data"]
EXPOSE 50051 8081 9090
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["segmentd", "healthcheck", "--addr", "127.0.0.1:8081"]
ENTRYPOINT ["segmentd"]
CMD ["serve"]
