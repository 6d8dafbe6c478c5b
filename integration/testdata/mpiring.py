#!/usr/bin/python3
"""An MPI job (mpi4py): each step passes a token around the ring of ranks and
sums (rank+1)*step over all ranks with Allreduce; every rank checks what it
got, rank 0 writes the step to DIR/job.log. mpiring.py DIR STEPS; exit 3 on a
wrong value."""
import os, sys, time
from mpi4py import MPI

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
DIR, STEPS = sys.argv[1], int(sys.argv[2])
log = open(os.path.join(DIR, "job.log"), "a", buffering=1) if rank == 0 else None
for step in range(1, STEPS + 1):
    token = comm.sendrecv(step * 1000 + rank, dest=(rank + 1) % size, source=(rank - 1) % size)
    if token != step * 1000 + (rank - 1) % size:
        print("rank %d step %d: token %d" % (rank, step, token), file=sys.stderr, flush=True)
        sys.exit(3)
    total = comm.allreduce((rank + 1) * step, op=MPI.SUM)
    if total != step * size * (size + 1) // 2:
        print("rank %d step %d: sum %d" % (rank, step, total), file=sys.stderr, flush=True)
        sys.exit(3)
    if log:
        log.write("%d\n" % step)
    time.sleep(0.03)
