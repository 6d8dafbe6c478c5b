/* samepids: four children report their pids through a pipe; every step the
 * children check getpid/gettid and the parent checks each child's
 * /proc/PID/stat names it as the parent. */
#include "suite.h"

int main(int argc, char **argv)
{
	pid_t kids[4];
	suite_init(argc, argv);
	for (int k = 0; k < 4; k++) {
		kids[k] = SYS(fork());
		if (kids[k] == 0) {
			set_tag("c%d", k);
			count_loop(N);
			_exit(0);
		}
	}
	for (long i = 1; i <= N; i++) {
		for (int k = 0; k < 4; k++) {
			char path[64], buf[512], *p;
			int fd, n, ppid;
			snprintf(path, sizeof path, "/proc/%d/stat", kids[k]);
			fd = SYS(open(path, O_RDONLY));
			n = (int)SYS(read(fd, buf, sizeof buf - 1));
			close(fd);
			buf[n] = 0;
			p = strrchr(buf, ')');
			CHECK(p && sscanf(p + 2, "%*c %d", &ppid) == 1, "parse %s", path);
			CHECK(ppid == getpid(), "child %d has parent %d, want %d", kids[k], ppid, getpid());
		}
		say("children %d %d %d %d", kids[0], kids[1], kids[2], kids[3]);
		tick();
	}
	for (int k = 0; k < 4; k++)
		reap(kids[k], 0);
	done("pids kept");
}
