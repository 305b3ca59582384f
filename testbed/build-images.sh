#!/usr/bin/env bash
# Builds the testbed's FROM-scratch images from static binaries:
#   acevisor-testbed/gluetun:dev  (fake-gluetun)
#   acevisor-testbed/engine:dev   (fake-engine)
# Works from any directory. Env: TESTBED_SKIP_BUILD=1 skips everything when both images exist;
# GLUETUN_IMAGE / ENGINE_IMAGE override the tags; CARGO_TARGET_DIR is honoured.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
target="x86_64-unknown-linux-gnu"
gluetun_image="${GLUETUN_IMAGE:-acevisor-testbed/gluetun:dev}"
engine_image="${ENGINE_IMAGE:-acevisor-testbed/engine:dev}"

say() { printf '==> %s\n' "$*" >&2; }

image_exists() { docker image inspect "$1" >/dev/null 2>&1; }

if [[ "${TESTBED_SKIP_BUILD:-}" == "1" ]] && image_exists "$gluetun_image" && image_exists "$engine_image"; then
    say "TESTBED_SKIP_BUILD=1 and $gluetun_image, $engine_image exist: nothing to do"
    exit 0
fi

# Static binaries. The explicit --target keeps +crt-static off proc-macros and build scripts.
say "cargo build --release -p acevisor-testbed --target $target (static)"
(cd "$root" && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release -p acevisor-testbed --target "$target")
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

build_image "$gluetun_image" "$here/docker/gluetun.Dockerfile" "$bin_dir/fake-gluetun"
build_image "$engine_image" "$here/docker/engine.Dockerfile" "$bin_dir/fake-engine"

# --- Hook: third image, acevisor:dev from the main crate (not built yet) ---------------------
# When the daemon gets an image, build its static binary here (same RUSTFLAGS/--target, with
# `-p acevisor --bin acevisor`), add testbed/docker/acevisor.Dockerfile and call:
#   build_image "${ACEVISOR_IMAGE:-acevisor:dev}" "$here/docker/acevisor.Dockerfile" "$bin_dir/acevisor"
# ---------------------------------------------------------------------------------------------

# Old builds of these tags become dangling images; drop them (only ours, by label).
docker image prune -f --filter label=acevisor-testbed=1 >/dev/null

say "done: $gluetun_image $engine_image"
