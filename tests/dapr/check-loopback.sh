#!/usr/bin/env bash
# Shows that a daprd started the way Roost's tests start it sends nothing off loopback: runs
# `roost serve` and daprd (with tests/dapr/config.yaml and the loopback flags) under strace,
# drives a few state calls through daprd's HTTP API, and fails if any connect, bind, sendto or
# sendmsg names an inet address outside 127.0.0.0/8 and ::1 (or asks for multicast).
#
#   bash tests/dapr/check-loopback.sh [path/to/roost] [path/to/daprd]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
roost="${1:-$root/target/debug/roost}"
daprd="${2:-$root/target/dapr/bin/daprd}"
command -v strace >/dev/null || { echo "check-loopback: strace is needed (apt-get install strace)" >&2; exit 1; }
work="$(mktemp -d)"
cleanup() {
  local jobs
  jobs="$(jobs -p)"
  [ -z "$jobs" ] || kill $jobs 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/sockets" "$work/data"
"$roost" serve --socket-folder "$work/sockets" --data-dir "$work/data" --name roost \
  --stop-when-stdin-closes < <(sleep 60) > "$work/roost.out" 2>&1 &
for _ in $(seq 100); do [ -S "$work/sockets/roost.sock" ] && break; sleep 0.1; done
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
http=$(port); grpc=$(port); internal=$(port)
DAPR_HOST_IP=127.0.0.1 DAPR_COMPONENTS_SOCKETS_FOLDER="$work/sockets" \
  timeout -s TERM 40 strace -f -qq -e trace=network -o "$work/strace.txt" \
  "$daprd" --app-id loopback-check --resources-path "$root/components" \
  --config "$here/config.yaml" --dapr-listen-addresses 127.0.0.1 \
  --dapr-http-port "$http" --dapr-grpc-port "$grpc" \
  --dapr-internal-grpc-listen-address 127.0.0.1 --dapr-internal-grpc-port "$internal" \
  --enable-metrics=false --metrics-listen-address 127.0.0.1 --metrics-port "$(port)" \
  --placement-host-address "" --scheduler-host-address "" > "$work/daprd.log" 2>&1 &
for _ in $(seq 300); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "127.0.0.1:$http/v1.0/healthz/outbound")" = 204 ] && break
  sleep 0.1
done
curl -sf -X POST "127.0.0.1:$http/v1.0/state/statestore" -d '[{"key":"k","value":1}]'
curl -sf "127.0.0.1:$http/v1.0/state/statestore/k" >/dev/null
curl -sf "127.0.0.1:$http/v1.0/metadata" >/dev/null
sleep 5   # let background loops (name resolution, health, telemetry) run a while
pkill -TERM -f "strace -f -qq -e trace=network -o $work/strace.txt" || true
wait 2>/dev/null || true
# The calls that could put a packet on a network: connect, bind, sendto, sendmsg with an inet
# address (recvmsg on netlink sockets lists the machine's own interfaces; that is no traffic).
calls=$(grep -E '^[0-9]+ +(connect|bind|sendto|sendmsg)\(' "$work/strace.txt" | grep -E 'AF_INET' || true)
addrs=$(grep -oE 'inet_addr\("[^"]+"\)|inet_pton\(AF_INET6, "[^"]+"' <<<"$calls" | sort | uniq -c || true)
echo "inet addresses in daprd's connect/bind/sendto/sendmsg calls:"
echo "${addrs:-  (none)}"
if grep -oE 'inet_addr\("[^"]+"\)|inet_pton\(AF_INET6, "[^"]+"' <<<"$calls" \
   | grep -vE '"127\.|"0\.0\.0\.0"|"::1"|"::ffff:127\.|"::"$'; then
  echo "check-loopback: daprd named a non-loopback address (above)" >&2
  exit 1
fi
if grep -qE 'IP_ADD_MEMBERSHIP|IPV6_JOIN_GROUP|IP_MULTICAST' "$work/strace.txt"; then
  echo "check-loopback: daprd joined a multicast group" >&2
  exit 1
fi
echo "check-loopback: ok ($(wc -l < "$work/strace.txt") network calls traced, all on loopback or Unix sockets)"
