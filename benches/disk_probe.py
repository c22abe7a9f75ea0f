#!/usr/bin/env python3
"""Probes the disk's fsync latency beside a benchmark run.

Every 10 ms: a 4 KiB pwrite into a preallocated 1 MiB file, then fdatasync (the file's blocks
exist, so the call writes data only, as the log's appends into a reused segment do). Prints
latency percentiles and every call over 20 ms with its UTC second, to line up with the
engine's "slow write-ahead log append" debug lines (`docs/bench/2026-12-06-device-stalls.md`).

    python3 benches/disk_probe.py SECONDS FILE    # stops early on SIGINT; FILE is removed
"""
import os
import signal
import sys
import time


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit("usage: disk_probe.py SECONDS FILE")
    seconds, path = float(sys.argv[1]), sys.argv[2]
    stop = False

    def on_interrupt(*_):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGINT, on_interrupt)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.pwrite(fd, b"\0" * (1 << 20), 0)
        os.fsync(fd)
        block = os.urandom(4096)
        latencies, slow = [], []
        end = time.time() + seconds
        i = 0
        while time.time() < end and not stop:
            started = time.perf_counter()
            os.pwrite(fd, block, (i % 256) * 4096)
            os.fdatasync(fd)
            ms = (time.perf_counter() - started) * 1000
            latencies.append(ms)
            if ms > 20:
                slow.append((time.strftime("%H:%M:%S", time.gmtime()), round(ms, 1)))
            i += 1
            time.sleep(0.01)
    finally:
        os.close(fd)
        os.unlink(path)
    if not latencies:
        sys.exit("disk_probe.py: no call made")
    latencies.sort()
    n = len(latencies)
    print(
        f"calls {n} p50 {latencies[n // 2]:.2f} ms p99 {latencies[int(n * 0.99)]:.2f} ms "
        f"p99.9 {latencies[int(n * 0.999)]:.2f} ms slowest {latencies[-1]:.1f} ms; "
        f"over 20 ms: {len(slow)}"
    )
    for second, ms in slow:
        print(f"  {second} {ms} ms")


if __name__ == "__main__":
    main()
