#!/usr/bin/env python3
"""Checkpoints and write stalls from a roost-bench log.

Run roost-bench with `ROOST_LOG=roost_engine=debug` (the harness and the `roost serve` it
starts log the engine's debug lines to stderr), keep its output, then:

    python3 benches/checkpoints.py run.log [--each]

For every run line of the log (target, workload, clients) it reports the checkpoints that
happened during that run — count, duration (min / median / max), applied log bytes, the
unapplied bytes when each one ended — and what the writers waited: write-ahead-log appends
slower than 20 ms, batches held back while the unapplied writes were over half their bound
(counted at each checkpoint), batches that waited for room among them, slow planning
snapshots. `--each` lists every checkpoint with its time and duration. Lines of the old engine
(before catch-up: "checkpoint log_bytes=...") are read too; there every checkpoint held all
writers for its whole duration.
"""
import re
import statistics
import sys

ANSI = re.compile(r"\x1b\[[0-9;]*m")
FIELD = re.compile(r"(\w+)=([0-9.]+)")
RUN = re.compile(r"^(\S+)\s+(\S+)\s+(\S+)\s+clients\s+(\d+)\s")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    each = "--each" in sys.argv
    if not args:
        print(__doc__)
        sys.exit(2)
    events = []
    runs = []
    for raw in open(args[0], errors="replace"):
        line = ANSI.sub("", raw).rstrip("\n")
        if " DEBUG " in line:
            stamp = line.split(" ", 1)[0]
            fields = {k: float(v) for k, v in FIELD.findall(line)}
            if "roost_engine::catchup" in line and " checkpoint " in line:
                events.append(("checkpoint", stamp, fields, "catch-up"))
            elif "roost_engine::durability" in line and " checkpoint " in line:
                events.append(("checkpoint", stamp, fields, "writer held"))
            elif "slow write-ahead log append" in line:
                events.append(("append", stamp, fields, ""))
            elif "waited for room" in line:
                events.append(("room", stamp, fields, ""))
            elif "slow read snapshot" in line or "slow batch planning" in line:
                events.append(("plan", stamp, fields, ""))
            continue
        m = RUN.match(line)
        if m and "ops/s" in line:
            runs.append((len(events), m.groups(), line))
    start = 0
    for end, (target, tier, workload, clients), line in runs:
        window = events[start:end]
        start = end
        # `roost-baseline` (another build's server) and runs of a build before catch-up log
        # the old lines; the servers and the embedded engine of this build log catch-up's.
        # A checkpoint that ends a previous run can land in this run's window: counts are ±1.
        old = target == "roost-baseline" or not any(e[3] == "catch-up" for e in window)
        wanted = "writer held" if old else "catch-up"
        cps = [e for e in window if e[0] == "checkpoint" and e[3] == wanted]
        durations = [e[2].get("elapsed_ms", 0.0) for e in cps]
        print(f"## {target} {workload} clients {clients}")
        print("   " + re.sub(r"\s+", " ", line.split("B", 1)[1]).strip())
        if durations:
            kind = cps[0][3]
            print(
                f"   checkpoints ({kind}): {len(cps)}, duration min {min(durations):.0f} / "
                f"median {statistics.median(durations):.0f} / max {max(durations):.0f} ms"
            )
            unapplied = [e[2].get("unapplied_bytes") for e in cps if "unapplied_bytes" in e[2]]
            if unapplied:
                print(
                    f"   unapplied when a checkpoint ended: max {max(unapplied) / 1048576:.1f} MiB"
                )
            held = [e[2] for e in cps if "held_back_batches" in e[2]]
            if held:
                batches = sum(h["held_back_batches"] for h in held)
                ms = sum(h.get("held_back_ms", 0.0) for h in held)
                print(
                    f"   batches held back (unapplied over half the bound): {batches:.0f}, "
                    f"{ms:.0f} ms in all"
                )
            if kind == "writer held":
                print(
                    f"   writers waited for checkpoints: {sum(durations):.0f} ms in all "
                    f"(each checkpoint held every writer)"
                )
        else:
            print("   checkpoints: none logged (run with ROOST_LOG=roost_engine=debug)")
        for kind, label in (
            ("append", "log appends slower than 20 ms"),
            ("room", "batches that waited for room"),
            ("plan", "planning snapshots slower than 20 ms"),
        ):
            waits = [e[2].get("waited_ms", e[2].get("elapsed_ms", 0.0)) for e in window if e[0] == kind]
            if waits:
                print(f"   {label}: {len(waits)}, max {max(waits):.0f} ms, total {sum(waits):.0f} ms")
            elif kind != "plan":
                print(f"   {label}: 0")
        if each:
            for _, stamp, fields, _ in cps:
                print(f"     {stamp} {fields.get('elapsed_ms', 0):.0f} ms")


if __name__ == "__main__":
    main()
