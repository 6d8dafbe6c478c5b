/* epoll: one process writes to one of three pipes per step and waits on an
 * epoll set over their read ends; the registered data of the ready entry
 * must name that pipe, and what is read from it must be what was written. */
#include "suite.h"
#include <sys/epoll.h>

#define MAGIC 0x5eed000000000000ULL

int main(int argc, char **argv)
{
	int p[3][2], ep, quiet[2];
	struct epoll_event ev, out[8];
	suite_init(argc, argv);
	ep = SYS(epoll_create1(EPOLL_CLOEXEC));
	for (int k = 0; k < 3; k++) {
		SYS(pipe2(p[k], O_NONBLOCK));
		ev.events = EPOLLIN;
		ev.data.u64 = MAGIC | (uint64_t)k;
		SYS(epoll_ctl(ep, EPOLL_CTL_ADD, p[k][0], &ev));
	}
	/* Registered for output only, on a pipe nobody reads: always ready. */
	SYS(pipe(quiet));
	ev.events = EPOLLOUT;
	ev.data.u64 = MAGIC | 99;
	SYS(epoll_ctl(ep, EPOLL_CTL_ADD, quiet[1], &ev));
	for (long i = 1; i <= N; i++) {
		int k = (int)(i % 3), n, seen = 0;
		long got;
		write_all(p[k][1], &i, sizeof i);
		n = SYS(epoll_wait(ep, out, 8, 5000));
		CHECK(n == 2, "epoll_wait returned %d entries, want 2", n);
		for (int e = 0; e < n; e++) {
			uint64_t d = out[e].data.u64;
			CHECK((d & ~0xffffULL) == MAGIC, "registered data %#lx lost its tag", (unsigned long)d);
			if ((d & 0xffff) == 99) {
				CHECK(out[e].events == EPOLLOUT, "output entry has events %#x", out[e].events);
				continue;
			}
			CHECK((int)(d & 0xffff) == k, "pipe %d reported ready, wrote to %d", (int)(d & 0xffff), k);
			CHECK(read(p[k][0], &got, sizeof got) == sizeof got && got == i, "pipe %d gave %ld, want %ld", k, got, i);
			seen = 1;
		}
		CHECK(seen, "pipe %d not reported", k);
		say("pipe %d ready with %ld", k, i);
		tick();
	}
	done("%ld epoll rounds", N);
}
