/*
 * avx: 8 threads keep a thread-specific pattern live in every vector register
 * (ymm0-15; on CPUs with AVX-512 the even threads use zmm0-31 and opmask
 * k2-k7 instead) and check all of them on every iteration of an asm loop. A
 * checkpoint or restore that loses or mixes up extended FPU state (xstate)
 * makes a check fail, and the program exits 1 naming the register.
 *
 * The main thread appends "tick K iterations X" to LOG every 100 ms of its own
 * running time (time spent killed between checkpoint and restart does not
 * count), and after SECONDS of it stops the threads, appends
 * "done K iterations X" and exits 0.
 *
 * SIGUSR2 flips a bit of xmm5 in the signal frame of whichever thread takes
 * it, so the kernel restores a corrupted register: proof the checks can fail.
 *
 * usage: avx LOG SECONDS
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <ucontext.h>

#define NTHREADS 8
#define TICK_NS (100 * 1000 * 1000)

struct worker {
	uint64_t pattern[32 * 8] __attribute__((aligned(64))); /* 32 regs x 64 bytes */
	uint16_t kpattern[8];
	volatile uint64_t count __attribute__((aligned(64)));
	int id;
	int wide;
	pthread_t thread;
} __attribute__((aligned(64)));

static struct worker workers[NTHREADS];
static volatile uint64_t stop;

/* spin_ymm returns -1 once stop is set, else the index of the bad register. */
__attribute__((target("avx2"))) static int spin_ymm(struct worker *w)
{
	int bad;

	__asm__ volatile(
		".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"
		"vmovdqu \\r*32(%[p]), %%ymm\\r\n\t"
		".endr\n"
		"1:\n\t"
		".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15\n\t"
		"vpxor \\r*32(%[p]), %%ymm\\r, %%ymm\\r\n\t"
		"movl $\\r, %[bad]\n\t"
		"vptest %%ymm\\r, %%ymm\\r\n\t"
		"jnz 9f\n\t"
		"vpxor \\r*32(%[p]), %%ymm\\r, %%ymm\\r\n\t"
		".endr\n\t"
		"incq (%[cnt])\n\t"
		"cmpq $0, (%[stop])\n\t"
		"je 1b\n\t"
		"movl $-1, %[bad]\n"
		"9:\n\t"
		"vzeroupper\n"
		: [bad] "=&r"(bad)
		: [p] "r"(w->pattern), [cnt] "r"(&w->count), [stop] "r"(&stop)
		: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
		  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
		  "cc", "memory");
	return bad;
}

/*
 * spin_zmm is spin_ymm for all 32 zmm registers plus opmask k2-k7 (k1 is the
 * scratch mask of the test). Opmask failures report 100+k.
 */
__attribute__((target("avx512f"))) static int spin_zmm(struct worker *w)
{
	int bad, tmp;

	__asm__ volatile(
		".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n\t"
		"vmovdqu64 \\r*64(%[p]), %%zmm\\r\n\t"
		".endr\n\t"
		".irp r,2,3,4,5,6,7\n\t"
		"kmovw \\r*2(%[k]), %%k\\r\n\t"
		".endr\n"
		"1:\n\t"
		".irp r,0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31\n\t"
		"vpxorq \\r*64(%[p]), %%zmm\\r, %%zmm\\r\n\t"
		"movl $\\r, %[bad]\n\t"
		"vptestmq %%zmm\\r, %%zmm\\r, %%k1\n\t"
		"kortestw %%k1, %%k1\n\t"
		"jnz 9f\n\t"
		"vpxorq \\r*64(%[p]), %%zmm\\r, %%zmm\\r\n\t"
		".endr\n\t"
		".irp r,2,3,4,5,6,7\n\t"
		"movl $(100+\\r), %[bad]\n\t"
		"kmovw %%k\\r, %[tmp]\n\t"
		"cmpw \\r*2(%[k]), %w[tmp]\n\t"
		"jne 9f\n\t"
		".endr\n\t"
		"incq (%[cnt])\n\t"
		"cmpq $0, (%[stop])\n\t"
		"je 1b\n\t"
		"movl $-1, %[bad]\n"
		"9:\n\t"
		"vzeroupper\n"
		: [bad] "=&r"(bad), [tmp] "=&r"(tmp)
		: [p] "r"(w->pattern), [k] "r"(w->kpattern), [cnt] "r"(&w->count),
		  [stop] "r"(&stop)
		: "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
		  "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15",
		  "xmm16", "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23",
		  "xmm24", "xmm25", "xmm26", "xmm27", "xmm28", "xmm29", "xmm30", "xmm31",
		  "k1", "k2", "k3", "k4", "k5", "k6", "k7", "cc", "memory");
	return bad;
}

static uint64_t splitmix(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);

	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static void *run(void *arg)
{
	struct worker *w = arg;
	int bad = w->wide ? spin_zmm(w) : spin_ymm(w);

	if (bad >= 0) {
		if (bad >= 100)
			fprintf(stderr, "avx: thread %d: opmask k%d mismatch after %llu iterations\n",
				w->id, bad - 100, (unsigned long long)w->count);
		else
			fprintf(stderr, "avx: thread %d: register %s%d mismatch after %llu iterations\n",
				w->id, w->wide ? "zmm" : "ymm", bad, (unsigned long long)w->count);
		exit(1);
	}
	return NULL;
}

static void corrupt(int sig, siginfo_t *info, void *ctx)
{
	ucontext_t *uc = ctx;

	(void)sig;
	(void)info;
	/* sigreturn loads the vector registers back from this frame. */
	if (uc->uc_mcontext.fpregs != NULL)
		uc->uc_mcontext.fpregs->_xmm[5].element[0] ^= 1;
}

static uint64_t total(void)
{
	uint64_t sum = 0;

	for (int i = 0; i < NTHREADS; i++)
		sum += workers[i].count;
	return sum;
}

int main(int argc, char **argv)
{
	struct sigaction sa;
	sigset_t usr2;
	long ticks;
	int avx512;
	FILE *log;

	if (argc != 3) {
		fprintf(stderr, "usage: %s LOG SECONDS\n", argv[0]);
		return 2;
	}
	ticks = strtol(argv[2], NULL, 10) * (1000000000L / TICK_NS);
	__builtin_cpu_init();
	if (!__builtin_cpu_supports("avx2")) {
		fprintf(stderr, "avx: this CPU has no AVX2\n");
		return 2;
	}
	avx512 = __builtin_cpu_supports("avx512f");
	log = fopen(argv[1], "a");
	if (log == NULL) {
		fprintf(stderr, "avx: open %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	setvbuf(log, NULL, _IOLBF, 0);

	memset(&sa, 0, sizeof sa);
	sa.sa_sigaction = corrupt;
	sa.sa_flags = SA_SIGINFO | SA_RESTART;
	sigaction(SIGUSR2, &sa, NULL);

	for (int i = 0; i < NTHREADS; i++) {
		struct worker *w = &workers[i];
		uint64_t seed = 0x1234567ULL * (uint64_t)(i + 1);

		w->id = i;
		w->wide = avx512 && i % 2 == 0;
		for (int j = 0; j < 32 * 8; j++)
			w->pattern[j] = splitmix(&seed) | 1; /* never zero */
		for (int j = 0; j < 8; j++)
			w->kpattern[j] = (uint16_t)(splitmix(&seed) | 1);
		if (pthread_create(&w->thread, NULL, run, w) != 0) {
			fprintf(stderr, "avx: pthread_create failed\n");
			return 2;
		}
	}
	/* Only the spinning threads take SIGUSR2. */
	sigemptyset(&usr2);
	sigaddset(&usr2, SIGUSR2);
	pthread_sigmask(SIG_BLOCK, &usr2, NULL);
	printf("avx: %d threads, avx512 %s\n", NTHREADS, avx512 ? "yes" : "no");
	fflush(stdout);

	for (long k = 1; k <= ticks; k++) {
		struct timespec step = {0, TICK_NS};

		while (nanosleep(&step, &step) != 0 && errno == EINTR)
			;
		fprintf(log, "tick %ld iterations %llu\n", k, (unsigned long long)total());
	}
	stop = 1;
	for (int i = 0; i < NTHREADS; i++)
		pthread_join(workers[i].thread, NULL);
	for (int i = 0; i < NTHREADS; i++) {
		if (workers[i].count == 0) {
			fprintf(stderr, "avx: thread %d never completed an iteration\n", i);
			return 1;
		}
	}
	fprintf(log, "done %ld iterations %llu\n", ticks, (unsigned long long)total());
	if (fclose(log) != 0) {
		fprintf(stderr, "avx: close %s: %s\n", argv[1], strerror(errno));
		return 2;
	}
	return 0;
}
