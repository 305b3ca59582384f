#!/usr/bin/env bash
# acevisor benchmarks (issue 8): builds the testbed images, the release acevisor binary and the
# bench program, then runs every figure against the local Docker engine and prints one Markdown
# table (figure | median | min | max | baseline | ratio | target | unit; times in ms).
#
#   testbed/bench.sh            # 7 repetitions, 60 s footprint window (~6 min)
#   testbed/bench.sh --quick    # 3 repetitions, 15 s window (well under 3 min once built)
#   BENCH_ONLY=reconcile,cold testbed/bench.sh --quick   # some figures only
#                                 (reconcile, failure, ports, cold, provision, rss, streams, scale,
#                                  failover-gap, fanout-200, time-to-first-byte)
#
# Everything the run starts carries the label acevisor-test.run=<run id> (engines are managed
# under that id as acevisor's instance) and is removed at the end, also on failure or Ctrl-C.
# Numbers on a shared machine are noisy: read the spread, not just the median.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
quick=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=(--quick) ;;
    *) echo "usage: $0 [--quick]" >&2; exit 2 ;;
  esac
done

say() { printf '==> %s\n' "$*" >&2; }

say "testbed images (tag ${TESTBED_TAG:-dev})"
"$root/testbed/build-images.sh" testbed >&2
say "cargo build --release --bin acevisor --example bench"
cargo build --release --quiet --bin acevisor --example bench >&2
target="${CARGO_TARGET_DIR:-$root/target}/release"

only=()
if [ -n "${BENCH_ONLY:-}" ]; then only=(--only "$BENCH_ONLY"); fi

say "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -sr), Docker $(docker version --format '{{.Server.Version}}'), load $(cut -d' ' -f1-3 /proc/loadavg)"
started=$(date +%s)
"$target/examples/bench" "${quick[@]}" --acevisor "$target/acevisor" "${only[@]}"
say "done in $(( $(date +%s) - started )) s"
