#!/usr/bin/env bash
# acevisor live demo on local images: two fake Gluetun VPNs, acevisor in redundant mode, and a
# scripted incident (VPN 1 killed, then recreated with a new forwarded port) so you can watch
# emergency mode and the forwarded-engine invariant at work. Ctrl-C stops acevisor and removes
# everything the demo created.
#
#   testbed/demo.sh                  # runs until Ctrl-C
#   DEMO_SECONDS=60 testbed/demo.sh  # stops by itself after 60 s
#   DEMO_INCIDENT=0 testbed/demo.sh  # no scripted incident
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
instance=demo
vpn1=acevisor-demo-gluetun-1
vpn2=acevisor-demo-gluetun-2
key=demo-key
seconds="${DEMO_SECONDS:-0}"
incident="${DEMO_INCIDENT:-1}"
log="$(mktemp -t acevisor-demo.XXXXXX.log)"
acevisor_pid=""

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

cleanup() {
  trap - EXIT INT TERM
  if [ -n "$acevisor_pid" ] && kill -0 "$acevisor_pid" 2>/dev/null; then
    kill -TERM "$acevisor_pid" 2>/dev/null || true
    wait "$acevisor_pid" 2>/dev/null || true
  fi
  say "cleaning up: removing the demo's VPNs and engines"
  ids="$(docker ps -aq --filter label=acevisor-demo=1; docker ps -aq --filter "label=acevisor.managed=$instance")"
  if [ -n "$ids" ]; then docker rm -f $ids >/dev/null; fi
  echo "acevisor log kept in $log"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

say "building the test images (fake Gluetun, fake AceStream engine)"
"$root/testbed/build-images.sh" testbed
say "building acevisor"
cargo build --quiet --bin acevisor

start_vpn() { # name port
  docker run -d --name "$1" --label acevisor-demo=1 \
    -e FAKE_FORWARDED_PORT="$2" -e FAKE_API_KEY="$key" acevisor-testbed/gluetun:dev >/dev/null
}

table() {
  docker ps --filter "label=acevisor.managed=$instance" \
    --format '{{.Names}}\t{{.Label "acevisor.vpn"}}\t{{.Label "acevisor.forwarded"}}\t{{.Label "acevisor.p2p_port"}}\t{{.Status}}' |
    sort -t- -k2 -n |
    awk -F'\t' 'BEGIN { printf "  %-14s %-26s %-10s %-6s %s\n", "ENGINE", "VPN", "FORWARDED", "P2P", "STATUS" }
                { printf "  %-14s %-26s %-10s %-6s %s\n", $1, $2, ($3 == "true" ? "yes" : ""), $4, $5 }'
}

say "starting two fake Gluetun VPNs with forwarded ports 55747 and 40000"
docker rm -f "$vpn1" "$vpn2" >/dev/null 2>&1 || true
start_vpn "$vpn1" 55747
start_vpn "$vpn2" 40000

say "starting acevisor (redundant mode, config/examples/testbed.toml); its log: $log"
GLUETUN_API_KEY="$key" ACEVISOR_API_KEY="${ACEVISOR_API_KEY:-demo-api-key}" RUST_LOG="${RUST_LOG:-info}" \
  "$root/target/debug/acevisor" run --config config/examples/testbed.toml >"$log" 2>&1 &
acevisor_pid=$!

shown=0
decisions() { # new decision lines of the log since the last call
  local n
  n=$(wc -l <"$log")
  if [ "$n" -gt "$shown" ]; then
    sed -n "$((shown + 1)),${n}p" "$log" |
      grep -E 'VPN failed|VPN recovered|emergency state|port changed|creating engine|removing engine|engine ready|adopting' |
      sed -E 's/^[^ ]+ +[A-Z]+ +/  | /' || true
    shown=$n
  fi
}

t=0
while kill -0 "$acevisor_pid" 2>/dev/null; do
  sleep 1
  t=$((t + 1))
  decisions
  if [ $((t % 5)) -eq 0 ]; then
    say "t=${t}s engines"
    table
  fi
  if [ "$incident" = 1 ] && [ "$t" -eq 15 ]; then
    say "incident: docker kill $vpn1 (its engines are removed, $vpn2 keeps serving)"
    docker kill "$vpn1" >/dev/null
  fi
  if [ "$incident" = 1 ] && [ "$t" -eq 30 ]; then
    say "incident: $vpn1 recreated with a new forwarded port 34817 (engines come back, forwarded one first)"
    docker rm -f "$vpn1" >/dev/null
    start_vpn "$vpn1" 34817
  fi
  if [ "$seconds" -gt 0 ] && [ "$t" -ge "$seconds" ]; then
    say "demo time is up"
    break
  fi
done
if ! kill -0 "$acevisor_pid" 2>/dev/null; then
  echo "acevisor exited; last lines of its log:"
  tail -n 20 "$log"
  exit 1
fi
