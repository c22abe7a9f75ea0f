#!/usr/bin/env bash
# Where the CPU time of a call through daprd goes, for the daprd-roost target: runs roost-bench
# on one workload at 64 clients, samples every CPU with `perf record -a` (software clock, no
# call graphs) while the workload runs, then splits the samples by process (daprd, the Roost
# server, the harness, the rest) and the Roost server's samples by the crate of the function
# they fell in.
#
#   bash benches/profile-daprd.sh [WORKLOAD ...]     (default: get set txn)
#
# Needs perf (apt: linux-perf) and permission to sample the whole system (root, or
# kernel.perf_event_paranoid <= 0), a release build of roost-bench and daprd
# (`bash tests/dapr/build.sh`). Output: target/profile-daprd/<workload>.txt, and a summary
# on stdout. A benchmark, not a test: nothing here asserts a timing.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
bench="$root/target/release/roost-bench"
out="$root/target/profile-daprd"
seconds="${PROFILE_SECONDS:-10}"
mkdir -p "$out"
command -v perf >/dev/null || { echo "profile-daprd: perf is not installed" >&2; exit 1; }
[ -x "$bench" ] || { echo "profile-daprd: build it first: cargo build --release -p roost-bench" >&2; exit 1; }
workloads=("$@")
[ ${#workloads[@]} -gt 0 ] || workloads=(get set txn)

for workload in "${workloads[@]}"; do
  log="$out/$workload.bench.log"
  "$bench" --targets daprd-roost --workloads "$workload" --concurrency 64 \
    --duration "$((seconds + 4))s" --keys 100000 --out "$out/$workload.results" >"$log" 2>&1 &
  bench_pid=$!
  # The run starts once the keyspace is loaded; sample from 2 s into it.
  for _ in $(seq 1 600); do
    grep -q "started and preloaded" "$log" && break
    kill -0 "$bench_pid" 2>/dev/null || { cat "$log" >&2; exit 1; }
    sleep 0.5
  done
  sleep 2
  server_pid="$(pgrep -f "roost-bench serve-roost" | head -1)"
  ps -eo pid=,args= >"$out/$workload.processes.txt"
  perf record -a -F 999 -o "$out/$workload.perf.data" -- sleep "$seconds" >/dev/null 2>&1
  wait "$bench_pid"
  perf script -i "$out/$workload.perf.data" -F pid 2>/dev/null | sort | uniq -c \
    >"$out/$workload.samples-by-pid.txt"
  perf report -i "$out/$workload.perf.data" --stdio --sort sym --pid "$server_pid" 2>/dev/null \
    >"$out/$workload.server-symbols.txt"
  python3 - "$workload" "$out" <<'EOF'
import re, sys
workload, out = sys.argv[1:3]
# Which process each pid was while the samples were taken.
kinds = {}
for line in open(f"{out}/{workload}.processes.txt"):
    pid, _, args = line.strip().partition(" ")
    if "serve-roost" in args:
        kinds[pid] = "roost server"
    elif args.split(" ")[0].endswith("/daprd") or args.startswith("daprd"):
        kinds[pid] = "daprd"
    elif "roost-bench" in args:
        kinds[pid] = "harness (the SDK-like clients)"
groups = {"daprd": 0, "roost server": 0, "harness (the SDK-like clients)": 0,
          "idle and everything else": 0}
for line in open(f"{out}/{workload}.samples-by-pid.txt"):
    count, pid = line.split()
    groups[kinds.get(pid, "idle and everything else")] += int(count)
total = sum(groups.values()) or 1
groups = {name: 100.0 * n / total for name, n in groups.items()}
crates = {}
for line in open(f"{out}/{workload}.server-symbols.txt"):
    m = re.match(r"\s*([\d.]+)%\s+\[([k.])\]\s+(.*)", line)
    if not m:
        continue
    share, where, sym = float(m.group(1)), m.group(2), m.group(3).strip()
    if where == "k":
        crate = "kernel (syscalls: socket, futex, fsync, scheduling)"
    elif sym.startswith("0x"):
        crate = "unresolved"
    else:
        name = sym.lstrip("<").split("::")[0].split(" ")[0]
        crate = {"core": "core/alloc (copies, hashing)", "alloc": "core/alloc (copies, hashing)",
                 "std": "std", "__memmove_avx_unaligned_erms": "libc memcpy",
                 "_int_malloc": "libc malloc/free", "_int_free": "libc malloc/free",
                 "malloc": "libc malloc/free", "cfree": "libc malloc/free"}.get(name, name)
        if name.startswith(("mi_", "_mi_")):
            crate = "mimalloc (allocation)"
        elif name == "syscall" or (name.startswith("_") and crate == name):
            crate = "libc (memcpy, syscall wrappers, locks)"
    crates[crate] = crates.get(crate, 0.0) + share
lines = [f"## {workload}, daprd-roost, 64 clients: where the CPU went (2 cores sampled)"]
for name, share in groups.items():
    lines.append(f"  {name:<40} {share:6.1f} % of all CPU samples")
server_total = sum(crates.values()) or 1.0
lines.append("  the Roost server's samples, by crate of the function (share of the server's):")
for name, share in sorted(crates.items(), key=lambda kv: -kv[1])[:14]:
    lines.append(f"    {name:<56} {100 * share / server_total:6.1f} %")
text = "\n".join(lines)
print(text)
open(f"{out}/{workload}.txt", "w").write(text + "\n")
EOF
done
