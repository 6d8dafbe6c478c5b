"""pool.py LOG TICKS: a multiprocessing Pool maps over numbers that a feeder
process puts into a Queue; the results must come back complete, in order and
right."""
import multiprocessing as mp
import os
import sys
import time

TICK = 0.075


def square(i):
    time.sleep(2 * TICK)
    return i, i * i + 1, os.getpid()


def feeder(q, n):
    for i in range(1, n + 1):
        q.put(i)
        time.sleep(TICK / 4)
    q.put(None)


def main():
    log_path, n = sys.argv[1], int(sys.argv[2])
    fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def log(line):
        os.write(fd, (line + "\n").encode())

    def fail(why):
        log("FAIL: main: " + why)
        sys.exit(1)

    q = mp.Queue()
    p = mp.Process(target=feeder, args=(q, n))
    p.start()
    workers = set()
    k = 0
    with mp.Pool(2) as pool:
        for k, (i, sq, pid) in enumerate(pool.imap(square, iter(q.get, None)), 1):
            if i != k or sq != i * i + 1:
                fail("result %d is (%d, %d), want (%d, %d)" % (k, i, sq, k, k * k + 1))
            workers.add(pid)
            log("T main %d result %d from %d" % (k, sq, pid))
    p.join()
    if p.exitcode != 0:
        fail("feeder exited with %s" % p.exitcode)
    if k != n:
        fail("%d results, want %d" % (k, n))
    log("DONE %d results from %d workers" % (n, len(workers)))


if __name__ == "__main__":
    main()
