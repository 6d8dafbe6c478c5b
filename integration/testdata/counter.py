#!/usr/bin/python3
"""counter.py: appends "I S" lines to LOG for I = 1..N, where S is the sum
1+2+...+I, about 20 ms apart. The state lives in a dict and a list and its
invariants are checked every step, so a restore that corrupts the
interpreter's heap makes it exit 1. SIGUSR2 breaks an invariant on purpose.

usage: counter.py LOG N
"""

import signal
import sys
import time


def main():
    if len(sys.argv) != 3:
        print("usage: counter.py LOG N", file=sys.stderr)
        return 2
    path, n = sys.argv[1], int(sys.argv[2])
    state = {"count": 0, "sum": 0, "names": {}}
    values = []

    def corrupt(signum, frame):
        state["sum"] += 1

    signal.signal(signal.SIGUSR2, corrupt)
    with open(path, "a", buffering=1) as log:
        while state["count"] < n:
            i = state["count"] + 1
            values.append(i)
            state["count"] = i
            state["sum"] += i
            state["names"]["v%d" % i] = i * i
            ok = (
                len(values) == i
                and values[-1] == i
                and state["sum"] == i * (i + 1) // 2
                and sum(values) == state["sum"]
                and len(state["names"]) == i
                and state["names"]["v%d" % (i // 2 + 1)] == (i // 2 + 1) ** 2
            )
            if not ok:
                print("counter.py: invariant broken at step %d: sum %d, %d values"
                      % (i, state["sum"], len(values)), file=sys.stderr)
                return 1
            log.write("%d %d\n" % (i, state["sum"]))
            time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main())
