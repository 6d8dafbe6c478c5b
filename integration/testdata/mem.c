/*
 * mem: allocates MIB MiB, fills it from a xorshift generator and remembers the
 * checksum it must have. Each step re-reads the whole buffer and compares its
 * checksum with the expected one, then changes a few words on a few pages
 * (chosen by the same generator, so every run does the same) and updates the
 * expected checksum. It appends "step K checksum X" to LOG per step, exits 1
 * at the first mismatch and 0 after STEPS steps. A restore that loses, moves
 * or zeroes any page makes a step fail.
 *
 * SIGUSR2 flips one byte of the buffer, to prove the check can fail.
 *
 * PAGES (default 4) is how many pages a step changes and PAUSE_MS (default 20)
 * how long it sleeps after: many pages and no pause make a job that writes
 * its memory as fast as it can, under a pre-copy.
 *
 * usage: mem LOG MIB STEPS [PAGES [PAUSE_MS]]
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PAGE_WORDS (4096 / 8)
#define WORDS_PER_PAGE_STEP 8

static volatile uint64_t *buf;
static size_t nwords;

static void corrupt(int sig)
{
	(void)sig;
	((volatile unsigned char *)buf)[nwords * 4 + 123] ^= 0x40;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

/* word_sum is the checksum term of word w at index i: it depends on the
 * position, so moved or swapped pages change the sum, and zero pages too. */
static inline uint64_t word_sum(size_t i, uint64_t w)
{
	return (w ^ ((uint64_t)i * 0x9e3779b97f4a7c15ULL)) * 0xff51afd7ed558ccdULL;
}

static uint64_t checksum(void)
{
	const uint64_t *b = (const uint64_t *)buf;
	uint64_t sum = 0;

	for (size_t i = 0; i < nwords; i++)
		sum += word_sum(i, b[i]);
	return sum;
}

int main(int argc, char **argv)
{
	uint64_t rng = 0x2545f4914f6cdd1dULL, expected = 0;
	long mib, steps, pages_per_step = 4, pause_ms = 20;
	FILE *log;

	if (argc < 4 || argc > 6) {
		fprintf(stderr, "usage: %s LOG MIB STEPS [PAGES [PAUSE_MS]]\n", argv[0]);
		return 2;
	}
	mib = strtol(argv[2], NULL, 10);
	steps = strtol(argv[3], NULL, 10);
	if (argc > 4)
		pages_per_step = strtol(argv[4], NULL, 10);
	if (argc > 5)
		pause_ms = strtol(argv[5], NULL, 10);
	if (mib <= 0) {
		fprintf(stderr, "mem: MIB must be positive\n");
		return 2;
	}
	nwords = (size_t)mib * 1024 * 1024 / 8;
	buf = malloc(nwords * 8);
	if (buf == NULL) {
		fprintf(stderr, "mem: cannot allocate %ld MiB\n", mib);
		return 2;
	}
	log = fopen(argv[1], "a");
	if (log == NULL) {
		fprintf(stderr, "mem: open %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	setvbuf(log, NULL, _IOLBF, 0);
	signal(SIGUSR2, corrupt);

	for (size_t i = 0; i < nwords; i++) {
		buf[i] = xorshift(&rng);
		expected += word_sum(i, buf[i]);
	}

	for (long k = 1; k <= steps; k++) {
		struct timespec pause = {pause_ms / 1000, (pause_ms % 1000) * 1000 * 1000};
		uint64_t got = checksum();

		if (got != expected) {
			fprintf(stderr, "mem: step %ld: checksum %016llx, expected %016llx\n",
				k, (unsigned long long)got, (unsigned long long)expected);
			return 1;
		}
		for (long p = 0; p < pages_per_step; p++) {
			size_t page = xorshift(&rng) % (nwords / PAGE_WORDS);

			for (int j = 0; j < WORDS_PER_PAGE_STEP; j++) {
				size_t i = page * PAGE_WORDS + xorshift(&rng) % PAGE_WORDS;
				uint64_t old = buf[i];

				buf[i] = old + xorshift(&rng);
				expected += word_sum(i, buf[i]) - word_sum(i, old);
			}
		}
		fprintf(log, "step %ld checksum %016llx\n", k, (unsigned long long)expected);
		while (pause_ms > 0 && nanosleep(&pause, &pause) != 0 && errno == EINTR)
			;
	}
	if (fclose(log) != 0) {
		fprintf(stderr, "mem: close %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	return 0;
}
