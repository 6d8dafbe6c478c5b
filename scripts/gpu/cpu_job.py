#!/usr/bin/env python3
"""The steps of driver_job.py without a GPU, for a dry run of
gpu-test.sh on a machine without one (GPU_TEST_DRY=1)."""
import sys
import time

out = open(sys.argv[1], "a")
value, step = 7, 0
while True:
    step += 1
    value += 1
    print(f"step {step} value {value}", file=out, flush=True)
    time.sleep(0.2)
