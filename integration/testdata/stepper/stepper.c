/* stepper LOG STEPS: appends "step N" to LOG every 20 ms through
 * libstep.so, for tests of a library that changed under a checkpointed job. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

long step_next(long i);
const char *step_build(void);

int main(int argc, char **argv)
{
	FILE *log;
	long i, steps;
	struct timespec ts = {0, 20 * 1000 * 1000};
	if (argc != 3) {
		fprintf(stderr, "usage: stepper LOG STEPS\n");
		return 2;
	}
	log = fopen(argv[1], "a");
	if (!log) {
		perror(argv[1]);
		return 1;
	}
	steps = atol(argv[2]);
	for (i = 0; i < steps; i = step_next(i)) {
		fprintf(log, "step %ld %s\n", i + 1, step_build());
		fflush(log);
		nanosleep(&ts, NULL);
	}
	return 0;
}
