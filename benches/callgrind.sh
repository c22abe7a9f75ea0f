#!/usr/bin/env bash
# Instructions a server spends per served call, counted by callgrind (repeatable, unlike wall
# time on shared VMs): the server process only, counters zeroed after preload and warm-up,
# CLIENTS clients (16) on one HTTP/2 connection as daprd uses, 1 KiB values, KEYS keys (10 000).
#
#   bash benches/callgrind.sh [roost|redis|go|both|all] [OPS...]   (OPS: get set txn bulk-get)
#
# Roost is served by the harness's `serve-roost` (the same `roost_component::server::serve` as
# `roost serve`, same allocator); ROOST_SERVER names another build of the harness binary, for
# a before/after. Redis is redis-server without persistence, called as Dapr's `state.redis`
# calls it (HGETALL; EVAL of its set script; MULTI/EVAL…/EXEC). `go` is tests/dapr/memstore, a
# pluggable state store on grpc-go and Dapr's generated protos keeping its state in a map (the
# way Dapr's Go components SDK serves one), called exactly as Roost is. `both` is Roost and
# Redis; `all` adds `go`. Prints one line per call kind:
# target, op, instructions per call; KEEP=DIR keeps each dump there, for callgrind_annotate.
# Needs valgrind (apt) and, for Redis, redis-server.
set -euo pipefail
cd "$(dirname "$0")/.."

WHICH=${1:-both}
shift || true
OPS=("$@")
[ ${#OPS[@]} -eq 0 ] && OPS=(get set txn bulk-get)
CALLS=${CALLS:-3000}
CLIENTS=${CLIENTS:-16}
KEYS=${KEYS:-10000}

command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
cargo build --release -q -p roost-bench --bin roost-bench --example served_calls
SERVER=${ROOST_SERVER:-target/release/roost-bench}
CLIENT=target/release/examples/served_calls

WORK=$(mktemp -d)
SERVER_PID=
cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# Runs one measurement: the server (already started under callgrind, pid SERVER_PID) is driven
# by the client; counters are zeroed once the client is warm, dumped when it is done.
measure() {
    local target=$1 address=$2 op=$3 protocol=$1
    # The Go store speaks the pluggable protocol, as Roost does.
    [ "$target" = go ] && protocol=roost
    coproc CLIENT_PROC { "$CLIENT" "$protocol" "$address" "$op" "$CALLS" "$CLIENTS" "$KEYS"; }
    local client_pid=$CLIENT_PROC_PID line
    read -r line <&"${CLIENT_PROC[0]}"
    [ "$line" = ready ] || { echo "client said: $line" >&2; exit 1; }
    callgrind_control -z "$SERVER_PID" >/dev/null 2>&1
    echo go >&"${CLIENT_PROC[1]}"
    read -r line <&"${CLIENT_PROC[0]}"
    [ "$line" = done ] || { echo "client said: $line" >&2; exit 1; }
    callgrind_control -d "$SERVER_PID" >/dev/null 2>&1
    wait "$client_pid" 2>/dev/null || true
    # The newest dump holds what ran since the counters were zeroed.
    local dump
    dump=$(ls -t "$WORK"/callgrind.out.* | grep -v '\.out\.[0-9]*$' | head -1)
    if [ -n "${KEEP:-}" ]; then
        mkdir -p "$KEEP" && cp "$dump" "$KEEP/callgrind.$target.$op"
    fi
    local total
    total=$(awk '/^(summary|totals):/ {print $2; exit}' "$dump")
    printf '%-6s %-9s %10d instructions per call  (%s calls, %s clients)\n' \
        "$target" "$op" $((total / CALLS)) "$CALLS" "$CLIENTS"
}

# `serve-roost` stops when its standard input closes: hold it open on a FIFO.
mkfifo "$WORK/stdin"
exec 7<>"$WORK/stdin"

start_under_callgrind() {
    rm -f "$WORK"/callgrind.out.*
    valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.out.%p" "$@" \
        <"$WORK/stdin" >"$WORK/server.log" 2>&1 &
    SERVER_PID=$!
}

stop_server() {
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

if [ "$WHICH" = go ] || [ "$WHICH" = all ]; then
    command -v go >/dev/null || { echo "callgrind.sh: no Go toolchain for the go target" >&2; exit 1; }
    mkdir -p target/tools
    (cd tests/dapr && CGO_ENABLED=0 go build -trimpath -o ../../target/tools/memstore ./memstore)
fi

for op in "${OPS[@]}"; do
    if [ "$WHICH" = roost ] || [ "$WHICH" = both ] || [ "$WHICH" = all ]; then
        rm -rf "$WORK/sockets" "$WORK/data"
        mkdir -p "$WORK/sockets" "$WORK/data"
        start_under_callgrind "$SERVER" serve-roost --socket-folder "$WORK/sockets" --data-dir "$WORK/data"
        for _ in $(seq 600); do [ -S "$WORK/sockets/roost.sock" ] && break; sleep 0.1; done
        [ -S "$WORK/sockets/roost.sock" ] || { cat "$WORK/server.log" >&2; exit 1; }
        measure roost "$WORK/sockets/roost.sock" "$op"
        stop_server
    fi
    if [ "$WHICH" = go ] || [ "$WHICH" = all ]; then
        rm -rf "$WORK/sockets" && mkdir -p "$WORK/sockets"
        # Go preempts goroutines with signals, which callgrind cannot follow: off, as a
        # GODEBUG setting (it changes scheduling, not the work a call does).
        GODEBUG=asyncpreemptoff=1 start_under_callgrind target/tools/memstore -socket "$WORK/sockets/memstore.sock"
        for _ in $(seq 600); do [ -S "$WORK/sockets/memstore.sock" ] && break; sleep 0.1; done
        [ -S "$WORK/sockets/memstore.sock" ] || { cat "$WORK/server.log" >&2; exit 1; }
        measure go "$WORK/sockets/memstore.sock" "$op"
        stop_server
    fi
    if [ "$WHICH" = redis ] || [ "$WHICH" = both ] || [ "$WHICH" = all ]; then
        command -v redis-server >/dev/null || { echo "callgrind.sh: no redis-server (apt-get install redis-server)" >&2; exit 1; }
        port=$(free_port)
        start_under_callgrind redis-server --port "$port" --bind 127.0.0.1 --save '' \
            --appendonly no --dir "$WORK"
        for _ in $(seq 600); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
        measure redis "127.0.0.1:$port" "$op"
        stop_server
    fi
done
