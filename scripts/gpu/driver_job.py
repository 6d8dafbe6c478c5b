#!/usr/bin/env python3
"""A GPU job on the CUDA driver API alone: it keeps a value in 64 MiB of
device memory, checks every step that the device still holds it, then
moves it on. A restart that lost or changed device memory ends the job
with MISMATCH; every step is appended to the output file."""
import ctypes
import sys
import time

cuda = ctypes.CDLL("libcuda.so.1")
u64 = ctypes.c_uint64


def check(r, what):
    if r != 0:
        sys.exit(f"{what}: CUDA error {r}")


cuda.cuMemAlloc_v2.argtypes = [ctypes.POINTER(u64), ctypes.c_size_t]
cuda.cuMemsetD32_v2.argtypes = [u64, ctypes.c_uint, ctypes.c_size_t]
cuda.cuMemcpyDtoH_v2.argtypes = [ctypes.c_void_p, u64, ctypes.c_size_t]

check(cuda.cuInit(0), "cuInit")
dev = ctypes.c_int()
check(cuda.cuDeviceGet(ctypes.byref(dev), 0), "cuDeviceGet")
ctx = ctypes.c_void_p()
check(cuda.cuDevicePrimaryCtxRetain(ctypes.byref(ctx), dev), "cuDevicePrimaryCtxRetain")
check(cuda.cuCtxSetCurrent(ctx), "cuCtxSetCurrent")

n = 16 << 20  # 64 MiB of uint32
dptr = u64()
check(cuda.cuMemAlloc_v2(ctypes.byref(dptr), n * 4), "cuMemAlloc")
host = (ctypes.c_uint32 * n)()
out = open(sys.argv[1], "a")
value = 7
check(cuda.cuMemsetD32_v2(dptr, value, n), "cuMemsetD32")
step = 0
while True:
    step += 1
    check(cuda.cuMemcpyDtoH_v2(host, dptr, n * 4), "cuMemcpyDtoH")
    if bytes(host) != value.to_bytes(4, "little") * n:
        print(f"MISMATCH step {step}: device memory does not hold {value}", file=out, flush=True)
        sys.exit(3)
    value += 1
    check(cuda.cuMemsetD32_v2(dptr, value, n), "cuMemsetD32")
    print(f"step {step} value {value}", file=out, flush=True)
    time.sleep(0.2)
