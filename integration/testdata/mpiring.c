/* An MPI job: each step passes a token around the ring of ranks and sums
 * (rank+1)*step over all ranks with MPI_Allreduce; every rank checks what it
 * got, rank 0 appends the step to DIR/job.log. mpiring DIR STEPS [MIB]: MIB
 * is memory per rank, filled and checked every step. Exit 3 on a wrong
 * value. */
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	int rank, size;
	MPI_Init(&argc, &argv);
	MPI_Comm_rank(MPI_COMM_WORLD, &rank);
	MPI_Comm_size(MPI_COMM_WORLD, &size);
	if (argc < 3) {
		fprintf(stderr, "usage: mpiring DIR STEPS [MIB]\n");
		MPI_Abort(MPI_COMM_WORLD, 2);
	}
	long steps = atol(argv[2]);
	size_t mem = argc > 3 ? (size_t)atol(argv[3]) << 20 : 0;
	unsigned char *buf = mem ? malloc(mem) : NULL;
	for (size_t i = 0; i < mem; i++)
		buf[i] = (unsigned char)(i * 31 + rank);
	FILE *log = NULL;
	if (rank == 0) {
		char path[4096];
		snprintf(path, sizeof path, "%s/job.log", argv[1]);
		log = fopen(path, "a");
		if (!log) {
			perror(path);
			MPI_Abort(MPI_COMM_WORLD, 2);
		}
		setvbuf(log, NULL, _IOLBF, 0);
	}
	for (long step = 1; step <= steps; step++) {
		long out = step * 1000 + rank, in = -1;
		MPI_Sendrecv(&out, 1, MPI_LONG, (rank + 1) % size, 0, &in, 1, MPI_LONG,
			     (rank + size - 1) % size, 0, MPI_COMM_WORLD, MPI_STATUS_IGNORE);
		if (in != step * 1000 + (rank + size - 1) % size) {
			fprintf(stderr, "rank %d step %ld: token %ld\n", rank, step, in);
			return 3;
		}
		long mine = (rank + 1) * step, sum = 0;
		MPI_Allreduce(&mine, &sum, 1, MPI_LONG, MPI_SUM, MPI_COMM_WORLD);
		if (sum != step * size * (size + 1) / 2) {
			fprintf(stderr, "rank %d step %ld: sum %ld\n", rank, step, sum);
			return 3;
		}
		if (mem) {
			size_t i = (size_t)(step * 4099) % mem;
			if (buf[i] != (unsigned char)(i * 31 + rank)) {
				fprintf(stderr, "rank %d step %ld: memory at %zu changed\n", rank, step, i);
				return 3;
			}
		}
		if (log)
			fprintf(log, "%ld\n", step);
		usleep(30000);
	}
	MPI_Finalize();
	return 0;
}
