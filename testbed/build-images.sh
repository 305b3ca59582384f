#!/usr/bin/env bash
# Builds the FROM-scratch images from static binaries:
#   acevisor-testbed/gluetun:dev  (fake-gluetun)      \ "testbed"
#   acevisor-testbed/engine:dev   (fake-engine)       /
#   acevisor:dev                  (the daemon)          "acevisor"
# Usage: build-images.sh [testbed|acevisor|all]   (default all)
# Works from any directory. Env: TESTBED_SKIP_BUILD=1 skips everything when the selected images
# exist; TESTBED_TAG (default dev) is the tag of all three, so checkouts side by side keep apart;
# GLUETUN_IMAGE / ENGINE_IMAGE / ACEVISOR_IMAGE override whole names; CARGO_TARGET_DIR is honoured.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="x86_64-unknown-linux-gnu"
tag="${TESTBED_TAG:-dev}"
gluetun_image="${GLUETUN_IMAGE:-acevisor-testbed/gluetun:$tag}"
engine_image="${ENGINE_IMAGE:-acevisor-testbed/engine:$tag}"
acevisor_image="${ACEVISOR_IMAGE:-acevisor:$tag}"
which="${1:-all}"
case "$which" in
    testbed) images=("$gluetun_image" "$engine_image") ;;
    acevisor) images=("$acevisor_image") ;;
    all) images=("$gluetun_image" "$engine_image" "$acevisor_image") ;;
    *) printf 'usage: %s [testbed|acevisor|all]\n' "$0" >&2; exit 2 ;;
esac

say() { printf '==> %s\n' "$*" >&2; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

all_exist() {
    local image
    for image in "${images[@]}"; do image_exists "$image" || return 1; done
}

if [[ "${TESTBED_SKIP_BUILD:-}" == "1" ]] && all_exist; then
    say "TESTBED_SKIP_BUILD=1 and ${images[*]} exist: nothing to do"
    exit 0
fi

# Static binaries. The explicit --target keeps +crt-static off proc-macros and build scripts.
# One cargo call for everything selected: the dependency graph is built once.
case "$which" in
    testbed) packages=(-p acevisor-testbed) ;;
    acevisor) packages=(-p acevisor --bin acevisor) ;;
    all) packages=(-p acevisor-testbed -p acevisor --bins) ;;
esac
say "cargo build --release ${packages[*]} --target $target (static)"
(cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release "${packages[@]}" --target "$target")
bin_dir="${CARGO_TARGET_DIR:-$root/target}/$target/release"

# Each image gets a context holding only its binary, never the whole repository.
ctx="$(mktemp -d "${TMPDIR:-/tmp}/acevisor-testbed-images.XXXXXX")"
trap 'rm -rf "$ctx"' EXIT

# build_image <tag> <dockerfile> <file>...: stages the files and builds the tag.
build_image() {
    local tag="$1" dockerfile="$2"
    shift 2
    local dir="$ctx/${tag//[^A-Za-z0-9]/_}"
    mkdir -p "$dir"
    cp "$@" "$dir/"
    cp "$dockerfile" "$dir/Dockerfile"
    # Fixed mtimes keep the layer cache warm when a rebuild produced identical bytes.
    touch -d @0 "$dir"/*
    say "docker build -t $tag ($(basename "$dockerfile"))"
    # No buildx on this machine: ask for the classic builder explicitly.
    local out
    if ! out="$(DOCKER_BUILDKIT=0 docker build --label acevisor-testbed=1 -t "$tag" "$dir" 2>&1)"; then
        printf '%s\n' "$out" >&2
        exit 1
    fi
    say "built $tag ($(docker image inspect -f '{{.Id}}' "$tag" | cut -c8-19))"
}

if [[ "$which" != "acevisor" ]]; then
    build_image "$gluetun_image" "$here/docker/gluetun.Dockerfile" "$bin_dir/fake-gluetun"
    build_image "$engine_image" "$here/docker/engine.Dockerfile" "$bin_dir/fake-engine"
fi
if [[ "$which" != "testbed" ]]; then
    # The daemon's image: the same FROM-scratch shape as the root Dockerfile's final stage.
    # Symbols make up a quarter of the binary; the image ships without them when strip exists.
    acevisor_bin="$bin_dir/acevisor"
    if command -v strip >/dev/null 2>&1; then
        mkdir -p "$ctx/stripped"
        cp "$acevisor_bin" "$ctx/stripped/acevisor"
        strip "$ctx/stripped/acevisor"
        acevisor_bin="$ctx/stripped/acevisor"
    fi
    build_image "$acevisor_image" "$root/docker/Dockerfile.local" "$acevisor_bin"
    say "$acevisor_image is $(docker image inspect -f '{{.Size}}' "$acevisor_image") bytes"
fi

# Old builds of these tags become dangling images; drop them (only ours, by label).
docker image prune -f --filter label=acevisor-testbed=1 >/dev/null

say "done: ${images[*]}"
