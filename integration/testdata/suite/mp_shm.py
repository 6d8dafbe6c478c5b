"""mp_shm.py LOG TICKS: two worker processes add one to their own counter in
a multiprocessing.shared_memory block (a file in /dev/shm) under a
multiprocessing Lock, in turns; the parent reads both under the lock at
every step and checks that they only grow, and at the end that each
reached its count."""
import multiprocessing as mp
from multiprocessing import shared_memory
import os
import struct
import sys
import time

TICK = 0.075


def worker(name, lock, idx, n):
    shm = shared_memory.SharedMemory(name=name)
    for _ in range(n):
        with lock:
            (v,) = struct.unpack_from("q", shm.buf, idx * 8)
            struct.pack_into("q", shm.buf, idx * 8, v + 1)
        time.sleep(TICK / 3)
    shm.close()


def main():
    log_path, n = sys.argv[1], int(sys.argv[2])
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(line):
        os.write(fd, (line + "\n").encode())

    def fail(why):
        log("FAIL: main: " + why)
        sys.exit(1)

    ctx = mp.get_context("fork")
    shm = shared_memory.SharedMemory(create=True, size=4096)
    log("I main shm %s" % shm.name)
    lock = ctx.Lock()
    per = n * 3
    workers = [ctx.Process(target=worker, args=(shm.name, lock, i, per)) for i in range(2)]
    for w in workers:
        w.start()
    last = (0, 0)
    k = 0
    while any(w.is_alive() for w in workers):
        time.sleep(TICK)
        with lock:
            now = struct.unpack_from("qq", shm.buf, 0)
        if now[0] < last[0] or now[1] < last[1]:
            fail("counters went back from %s to %s" % (last, now))
        last = now
        k += 1
        log("T main %d counters %d %d" % (k, now[0], now[1]))
    for w in workers:
        w.join()
        if w.exitcode != 0:
            fail("worker exited with %s" % w.exitcode)
    final = struct.unpack_from("qq", shm.buf, 0)
    if final != (per, per):
        fail("counters end at %s, want (%d, %d)" % (final, per, per))
    shm.close()
    shm.unlink()
    log("DONE counters %d %d in shared memory %s" % (final[0], final[1], shm.name))


if __name__ == "__main__":
    main()
