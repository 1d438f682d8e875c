# syntax=docker/dockerfile:1
# session-reaper: build with the locked dependencies, run as a non-root user from
# a minimal image (no shell, no curl: the health check is the binary itself).
# Config in /etc/session-reaper (the production template, every policy in dry-run
# until you mount your own), state and the audit log in /var/lib/session-reaper.
# Not built on our CI machines (no Docker engine there): hadolint and
# tests/deploy.rs check it.

FROM rust:1.89-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Cargo reads every target the manifest declares, the benches included.
COPY benches ./benches
COPY policies ./policies
COPY deploy/config.yaml ./deploy/config.yaml
RUN CARGO_PROFILE_RELEASE_DEBUG=false CARGO_PROFILE_RELEASE_STRIP=true \
    cargo build --locked --release --bin session-reaper \
    && mkdir -p /out/etc/policies /out/state \
    && cp deploy/config.yaml /out/etc/config.yaml \
    && for p in policies/*.yaml; do \
         sed 's/^mode: enforce/mode: dry-run/' "$p" > "/out/etc/policies/$(basename "$p")"; \
       done

FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="session-reaper" \
      org.opencontainers.image.description="Kills the MySQL/MariaDB sessions your policies name, and never the ones it must not" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/session-reaper /usr/bin/session-reaper
COPY --from=build --chown=65532:65532 /out/etc /etc/session-reaper
# Owned by the runtime user, so that a fresh named volume is writable.
COPY --from=build --chown=65532:65532 /out/state /var/lib/session-reaper
USER 65532:65532
VOLUME ["/etc/session-reaper", "/var/lib/session-reaper"]
EXPOSE 9187
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/usr/bin/session-reaper", "health", "--url", "http://127.0.0.1:9187/healthz"]
ENTRYPOINT ["/usr/bin/session-reaper"]
CMD ["run", "--config", "/etc/session-reaper/config.yaml", "--listen", "0.0.0.0:9187", "--log-format", "json"]
