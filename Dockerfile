# syntax=docker/dockerfile:1
#
# identify-connector image.
#
#   docker build -t identify-connector:0.1.0 .
#   docker run --rm -p 8080:8080 -e CRUSTDATA_API_KEY=... \
#     -e IDENTIFY_KAFKA__BROKERS=broker:9092 identify-connector:0.1.0
#
# The default config (deploy/config.toml, the Helm chart's defaults) sits at
# /etc/identify-connector/config.toml; the chart mounts its ConfigMap there.
# The local result store lives under /var/lib/identify-connector.

FROM rust:1-bookworm AS builder
# rdkafka builds its vendored librdkafka (cmake, make, a C toolchain) against
# the system OpenSSL; reqwest's native-tls links OpenSSL too.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin identify-connector \
 && install -D -m 0755 target/release/identify-connector /out/identify-connector

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 identify \
 && useradd --system --uid 10001 --gid 10001 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin identify \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/identify-connector
COPY --from=builder /out/identify-connector /usr/local/bin/identify-connector
COPY deploy/config.toml /etc/identify-connector/config.toml
ENV RUST_LOG=info
# The local result store (cache.dir); mount a volume here to keep it.
VOLUME /var/lib/identify-connector
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["identify-connector"]
CMD ["--config", "/etc/identify-connector/config.toml"]
