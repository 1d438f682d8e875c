# syntax=docker/dockerfile:1
# session-reaper: build with the locked dependencies, run as a non-root user from
# a minimal image. Config in /etc/session-reaper, state in /var/lib/session-reaper.

FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --locked --release --bin session-reaper \
    && strip target/release/session-reaper

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="session-reaper" \
      org.opencontainers.image.description="Kills the MySQL/MariaDB sessions your policies name, and never the ones it must not" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/session-reaper /usr/bin/session-reaper
COPY --chown=65532:65532 examples/quickstart.yaml /etc/session-reaper/config.yaml
COPY --chown=65532:65532 policies /etc/session-reaper/policies
USER 65532:65532
VOLUME ["/etc/session-reaper", "/var/lib/session-reaper"]
EXPOSE 9187
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/bin/session-reaper", "health", "--url", "http://127.0.0.1:9187/healthz"]
ENTRYPOINT ["/usr/bin/session-reaper"]
CMD ["run", "--config", "/etc/session-reaper/config.yaml", "--listen", "0.0.0.0:9187", "--log-format", "json"]
