#!/usr/bin/env python3
"""A torch job: it keeps a float64 tensor on the GPU and the same tensor on
the CPU, applies the same exact element-wise steps to both, and checks
every step that they are equal. SIZE_MIB (argv[2], default 8) sets the
device memory it holds."""
import sys
import time

import torch

out = open(sys.argv[1], "a")
mib = int(sys.argv[2]) if len(sys.argv) > 2 else 8
n = mib * (1 << 20) // 8
torch.manual_seed(1)
cpu = torch.randint(0, 1000, (n,), dtype=torch.float64)
gpu = cpu.to("cuda")
step = 0
while True:
    step += 1
    # Multiplication, addition and fmod of these values are exact in
    # float64, on the GPU as on the CPU.
    gpu = torch.fmod(gpu * 3 + step, 1000.0)
    cpu = torch.fmod(cpu * 3 + step, 1000.0)
    if not torch.equal(gpu.cpu(), cpu):
        print(f"MISMATCH step {step}: the GPU tensor differs from the CPU replay", file=out, flush=True)
        sys.exit(3)
    print(f"step {step} sum {float(cpu.sum())}", file=out, flush=True)
    time.sleep(0.2)
