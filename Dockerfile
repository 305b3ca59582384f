# acevisor, built from source: a static release binary in an otherwise empty image.
#
#   docker build -t acevisor:latest .
#   docker run -d --name acevisor \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v "$PWD/config/acevisor.toml:/etc/acevisor/acevisor.toml:ro" \
#     -p 8000:8000 acevisor:latest
#
# Needs a registry for the `rust` builder image. Without one, build the binary on the host and use
# docker/Dockerfile.local (testbed/build-images.sh does both). docs/operations.md has the details.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim AS build
WORKDIR /src
COPY . .
# +crt-static gives a self-contained binary for the empty final image; the explicit --target keeps
# the flag off build scripts and proc-macros. The build runs on the image's own architecture
# (natively, or emulated under `docker buildx build --platform linux/arm64`), so `uname -m` names
# the target. No TLS, no OpenSSL: nothing else to install.
RUN set -eu; \
    target="$(uname -m)-unknown-linux-gnu"; \
    RUSTFLAGS="-C target-feature=+crt-static" \
      cargo build --release --locked --target "$target" -p acevisor --bin acevisor \
        --config 'profile.release.strip="symbols"'; \
    mkdir -p /out; \
    cp "target/$target/release/acevisor" /out/acevisor

FROM scratch
COPY --from=build /out/acevisor /acevisor

# Non-root by default. The Docker socket is usually root:docker 0660: give the container the
# socket's group with `group_add: ["<gid>"]` (compose) or `--group-add <gid>` (docker run), the
# gid being `stat -c %g /var/run/docker.sock`. Where the socket is root:root, run as `user: "0:0"`.
USER 65532:65532

# acevisor's HTTP API (api.listen); the healthcheck asks /livez on it.
EXPOSE 8000
STOPSIGNAL SIGTERM
# Set ACEVISOR_HEALTHCHECK_URL when api.listen uses another port.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 CMD ["/acevisor","healthcheck"]

ENTRYPOINT ["/acevisor"]
CMD ["run","--config","/etc/acevisor/acevisor.toml"]
