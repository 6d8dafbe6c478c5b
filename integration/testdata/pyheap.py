"""pyheap: a Python job whose memory is the Python heap.

It builds lists of floats and small records (dicts with string and tuple
fields) until its resident memory reaches MIB MiB, then every 100 ms appends
"tick N <CLOCK_MONOTONIC ns>" to LOG, one write(2) per line, like benchmem.

usage: python3 pyheap.py MIB LOG
"""

import os
import random
import sys
import time


def resident_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main():
    mib, log = int(sys.argv[1]), sys.argv[2]
    rng = random.Random(1)
    heap = []
    while resident_bytes() < mib << 20:
        values = [rng.random() * 1000.0 for _ in range(100_000)]
        records = [{"id": i, "name": "particle-%d" % i, "pos": (rng.random(), rng.random())}
                   for i in range(20_000)]
        heap.append((values, records))
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    n = 0
    while True:
        n += 1
        os.write(fd, b"tick %d %d\n" % (n, time.monotonic_ns()))
        time.sleep(0.1)


main()
