/* pipes_many: one process holds 1100 pipes, more than a user's pipe quota
 * (fs.pipe-user-pages-soft) gives full size, each with data queued in it;
 * the first holds 60000 bytes. Every step it reads 50 of them, checks the
 * contents, and queues new ones. */
#include "suite.h"
#include <sys/ioctl.h>
#include <sys/resource.h>

#define NPIPES 1100
#define BIG 60000
#define PER_TICK 50

static int pipes[NPIPES][2];
static long gen[NPIPES];
static unsigned char buf[BIG];

static size_t len_of(int i, long g)
{
	return i == 0 ? BIG : 1 + (size_t)(i * 13 + g) % 200;
}

static unsigned char byte_of(int i, long g, size_t k)
{
	return (unsigned char)(i * 31 + g * 7 + (long)k);
}

static void queue(int i)
{
	size_t n = len_of(i, gen[i]);
	for (size_t k = 0; k < n; k++)
		buf[k] = byte_of(i, gen[i], k);
	write_all(pipes[i][1], buf, n);
}

static void check(int i)
{
	size_t n = len_of(i, gen[i]);
	int queued = 0;
	SYS(ioctl(pipes[i][0], FIONREAD, &queued));
	CHECK((size_t)queued == n, "pipe %d holds %d bytes, want %zu", i, queued, n);
	read_full(pipes[i][0], buf, n);
	for (size_t k = 0; k < n; k++)
		CHECK(buf[k] == byte_of(i, gen[i], k), "pipe %d byte %zu is %u, want %u",
		      i, k, buf[k], byte_of(i, gen[i], k));
}

int main(int argc, char **argv)
{
	struct rlimit rl;
	suite_init(argc, argv);
	SYS(getrlimit(RLIMIT_NOFILE, &rl));
	if (rl.rlim_max < 2 * NPIPES + 16)
		skip("RLIMIT_NOFILE hard limit %lu is below %d", (unsigned long)rl.rlim_max, 2 * NPIPES + 16);
	rl.rlim_cur = rl.rlim_max;
	SYS(setrlimit(RLIMIT_NOFILE, &rl));
	for (int i = 0; i < NPIPES; i++) {
		SYS(pipe2(pipes[i], O_CLOEXEC));
		queue(i);
	}
	say("%d pipes, pipe 0 of %ld bytes", NPIPES, (long)SYS(fcntl(pipes[0][1], F_GETPIPE_SZ)));
	for (long s = 0; s < N; s++) {
		for (int j = 0; j < PER_TICK; j++) {
			int i = (int)((s * PER_TICK + j) % NPIPES);
			check(i);
			gen[i]++;
			queue(i);
		}
		say("step %ld checked %d pipes", s + 1, PER_TICK);
		tick();
	}
	for (int i = 0; i < NPIPES; i++)
		check(i);
	done("%d pipes held their data", NPIPES);
}
