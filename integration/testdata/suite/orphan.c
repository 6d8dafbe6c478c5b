/* orphan: a child forks a grandchild and exits; the grandchild, reparented to
 * the job's init, counts on and reports its count in a shared anonymous page,
 * which the main process follows to the end. */
#include "suite.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
	pid_t c, g;
	int p[2];
	volatile long *cnt;
	long v, last = 0;
	suite_init(argc, argv);
	cnt = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(cnt != MAP_FAILED, "mmap: %s", strerror(errno));
	*cnt = 0;
	SYS(pipe(p));
	c = SYS(fork());
	if (c == 0) {
		pid_t mid = getpid();
		g = SYS(fork());
		if (g == 0) {
			pid_t ppid;
			set_tag("grandchild");
			close(p[0]);
			while (getppid() == mid)
				sleep_ms(5);
			ppid = getppid();
			write_all(p[1], &ppid, sizeof ppid);
			close(p[1]);
			for (long i = 1; i <= N; i++) {
				CHECK(getppid() == ppid, "reparented grandchild's parent changed from %d to %d", ppid, getppid());
				say("count %ld parent %d", i, ppid);
				*cnt = i;
				tick();
			}
			_exit(0);
		}
		write_all(p[1], &g, sizeof g);
		_exit(0);
	}
	close(p[1]);
	reap(c, 0);
	pid_t ppid;
	read_full(p[0], &g, sizeof g);
	read_full(p[0], &ppid, sizeof ppid);
	CHECK(ppid != c, "orphan still has its exited parent %d", c);
	info("orphan reparented to %d", ppid);
	for (long i = 1; last < N; i++) {
		v = *cnt;
		CHECK(v >= last, "grandchild's count went back from %ld to %ld", last, v);
		CHECK(i < 4 * N, "grandchild stuck at %ld", v);
		if (v < N)
			CHECK(kill(g, 0) == 0, "grandchild %d is gone at count %ld", g, v);
		last = v;
		say("grandchild at %ld", v);
		tick();
	}
	done("orphan counted to %ld under init", N);
}
