/*
 * counter: appends the numbers last+1 .. N to LOG, one "%d\n" line per step,
 * about 20 ms apart, where last is the final number already in LOG (0 for a
 * new file). The value is kept twice (plain and scrambled) and the copies are
 * compared every step, so a restore that corrupts its memory makes it exit 1.
 * SIGUSR2 corrupts one copy on purpose, to prove that check can fail.
 *
 * usage: counter LOG N
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SCRAMBLE 0x5bd1e9955bd1e995ULL

static volatile unsigned long long shadow;

static void corrupt(int sig)
{
	(void)sig;
	shadow ^= 1;
}

/* last_value returns the number on the last complete line of path, 0 if none. */
static long last_value(const char *path)
{
	FILE *f = fopen(path, "r");
	char line[64];
	long last = 0;

	if (f == NULL)
		return 0;
	while (fgets(line, sizeof line, f) != NULL)
		if (strchr(line, '\n') != NULL)
			last = strtol(line, NULL, 10);
	fclose(f);
	return last;
}

int main(int argc, char **argv)
{
	struct timespec step = {0, 20 * 1000 * 1000};
	long n, i;
	FILE *log;

	if (argc != 3) {
		fprintf(stderr, "usage: %s LOG N\n", argv[0]);
		return 2;
	}
	n = strtol(argv[2], NULL, 10);
	signal(SIGUSR2, corrupt);

	i = last_value(argv[1]);
	log = fopen(argv[1], "a");
	if (log == NULL) {
		fprintf(stderr, "counter: open %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	/* Line buffering: every value reaches the file as soon as it is counted. */
	setvbuf(log, NULL, _IOLBF, 0);
	shadow = (unsigned long long)i ^ SCRAMBLE;

	while (i < n) {
		if ((shadow ^ SCRAMBLE) != (unsigned long long)i) {
			fprintf(stderr, "counter: state corrupted at %ld (shadow says %llu)\n",
				i, shadow ^ SCRAMBLE);
			return 1;
		}
		i++;
		shadow = (unsigned long long)i ^ SCRAMBLE;
		if (fprintf(log, "%ld\n", i) < 0) {
			fprintf(stderr, "counter: write %s: %s\n", argv[1], strerror(errno));
			return 2;
		}
		while (nanosleep(&step, &step) != 0 && errno == EINTR)
			;
		step.tv_nsec = 20 * 1000 * 1000;
	}
	if (fclose(log) != 0) {
		fprintf(stderr, "counter: close %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	return 0;
}
