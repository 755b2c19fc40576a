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
ENV SEGMENTD_LISTEN=0.0.0.0:50051 \
    SEGMENTD_DATA_DIR=/data \
    SEGMENTD_LOG_FORMAT=json
VOLUME ["/data"]
EXPOSE 50051
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["segmentd", "healthcheck", "--addr", "127.0.0.1:50051"]
ENTRYPOINT ["segmentd"]
CMD ["serve"]
