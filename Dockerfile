# acevisor, built from source: a static release binary in an otherwise empty image.
#
#   docker build -t acevisor .
#   docker run -d --name acevisor \
#     -v /var/run/docker.sock:/var/run/docker.sock \
#     --group-add "$(stat -c %g /var/run/docker.sock)" \
#     -v "$PWD/config/acevisor.toml:/etc/acevisor/acevisor.toml:ro" \
#     -p 8000:8000 acevisor
#
# Needs a registry for the `rust` builder image. Without one, build the binary on the host and use
# docker/Dockerfile.local (testbed/build-images.sh does both). docs/operations.md has the details.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
# Docker sets TARGETARCH under BuildKit; the classic builder leaves it empty (= amd64).
ARG TARGETARCH
WORKDIR /src
COPY . .
# +crt-static gives a self-contained binary for `FROM scratch`. The explicit --target keeps the
# flag off build scripts and proc-macros. No TLS, no OpenSSL: nothing else to install.
RUN set -eu; \
    case "${TARGETARCH:-amd64}" in \
      amd64) target=x86_64-unknown-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-gnu ;; \
      *) echo "unsupported TARGETARCH=${TARGETARCH}" >&2; exit 1 ;; \
    esac; \
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
