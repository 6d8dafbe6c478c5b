/*
 * benchmem: the job the checkpoint benchmark measures. It allocates MIB MiB,
 * fills it from a xorshift generator (so the pages neither compress nor
 * deduplicate), then every 100 ms appends "tick N <CLOCK_MONOTONIC ns>" to LOG
 * and changes a few words on a few pages, as a computing job would. It prints
 * nothing else: the first tick says the memory is ready, and a new tick after
 * a restore says the job makes progress again.
 *
 * LOG is opened with O_APPEND and written with one write(2) per line, so a
 * restored job goes on at the end of the file whatever its size was.
 *
 * SIGUSR2 makes the next tick change one word on every 20th page (5% of the
 * pages, spread over the whole buffer) before it is logged: the benchmark of
 * incremental checkpoints waits for that tick.
 *
 * FILL says what the memory holds (default random):
 *   random  xorshift output: neither compresses nor deduplicates
 *   sparse  a few random words at the start of each page, zeros after them
 *           (partly used buffers, sparse arrays)
 *   text    log-like lines with counters (text buffers, string tables)
 *   floats  a smooth field of doubles with noise in the low bits
 *           (simulation arrays)
 *
 * usage: benchmem MIB LOG [FILL]
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define PAGE_WORDS (4096 / 8)
#define PAGES_PER_TICK 16

static volatile sig_atomic_t dirty_asked;

static void ask_dirty(int sig)
{
	(void)sig;
	dirty_asked = 1;
}

static uint64_t xorshift(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

static int64_t monotonic_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* append writes the whole line, retrying short writes and EINTR, which a
 * checkpointer stopping the job may cause. */
static int append(int fd, const char *s, size_t n)
{
	while (n > 0) {
		ssize_t w = write(fd, s, n);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -1;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

static int fill(volatile uint64_t *buf, size_t nwords, const char *kind, uint64_t *rng)
{
	if (strcmp(kind, "random") == 0) {
		for (size_t i = 0; i < nwords; i++)
			buf[i] = xorshift(rng);
	} else if (strcmp(kind, "sparse") == 0) {
		for (size_t i = 0; i < nwords; i += PAGE_WORDS)
			for (size_t w = 0; w < 8; w++)
				buf[i + w] = xorshift(rng);
	} else if (strcmp(kind, "text") == 0) {
		char *c = (char *)buf, line[80];
		size_t n = nwords * 8, at = 0;

		for (unsigned long step = 0; at < n; step++) {
			int len = snprintf(line, sizeof(line), "step %08lu particle %5lu energy %+.4e converged\n",
					   step, step % 4096, (double)(step % 977) * -1.5e-3);
			for (int k = 0; k < len && at < n; k++)
				c[at++] = line[k];
		}
	} else if (strcmp(kind, "floats") == 0) {
		double *d = (double *)buf;

		for (size_t i = 0; i < nwords; i++) {
			double x = (double)(i % 65536) / 65536.0;

			d[i] = 300.0 + 20.0 * x * (1.0 - x) + (double)(xorshift(rng) & 0xffff) * 1e-9;
		}
	} else {
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t rng = 0x9e3779b97f4a7c15ULL;
	volatile uint64_t *buf;
	size_t nwords, npages;
	long mib;
	int fd;

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: %s MIB LOG [random|sparse|text|floats]\n", argv[0]);
		return 2;
	}
	mib = strtol(argv[1], NULL, 10);
	if (mib <= 0) {
		fprintf(stderr, "benchmem: MIB must be positive\n");
		return 2;
	}
	nwords = (size_t)mib * 1024 * 1024 / 8;
	npages = nwords / PAGE_WORDS;
	buf = malloc(nwords * 8);
	if (buf == NULL) {
		fprintf(stderr, "benchmem: cannot allocate %ld MiB\n", mib);
		return 2;
	}
	fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "benchmem: open %s: %s\n", argv[2], strerror(errno));
		return 2;
	}
	if (fill(buf, nwords, argc == 4 ? argv[3] : "random", &rng) != 0) {
		fprintf(stderr, "benchmem: unknown FILL %s\n", argv[3]);
		return 2;
	}
	signal(SIGUSR2, ask_dirty);

	for (long n = 1;; n++) {
		struct timespec pause = {0, 100 * 1000 * 1000};
		char line[64];
		int len;

		for (int p = 0; p < PAGES_PER_TICK; p++) {
			size_t page = xorshift(&rng) % npages;

			buf[page * PAGE_WORDS + xorshift(&rng) % PAGE_WORDS] += xorshift(&rng);
		}
		if (dirty_asked) {
			size_t first = xorshift(&rng) % 20;

			dirty_asked = 0;
			for (size_t page = first; page < npages; page += 20)
				buf[page * PAGE_WORDS + xorshift(&rng) % PAGE_WORDS] += 1 + xorshift(&rng) % 1000;
		}
		len = snprintf(line, sizeof(line), "tick %ld %lld\n", n, (long long)monotonic_ns());
		if (append(fd, line, (size_t)len) != 0) {
			fprintf(stderr, "benchmem: write %s: %s\n", argv[2], strerror(errno));
			return 1;
		}
		while (nanosleep(&pause, &pause) != 0 && errno == EINTR)
			;
	}
}
