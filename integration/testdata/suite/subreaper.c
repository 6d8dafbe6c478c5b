/* subreaper: the main process is a child subreaper; its child forks a
 * grandchild and exits, the grandchild is reparented to main, which checks
 * the subreaper flag at every step and finally reaps the grandchild. */
#include "suite.h"
#include <sys/prctl.h>

int main(int argc, char **argv)
{
	pid_t c, g, me;
	int p[2], flag;
	suite_init(argc, argv);
	me = getpid();
	SYS(prctl(PR_SET_CHILD_SUBREAPER, 1));
	SYS(pipe(p));
	c = SYS(fork());
	if (c == 0) {
		g = SYS(fork());
		if (g == 0) {
			set_tag("grandchild");
			while (getppid() != me)
				sleep_ms(5);
			count_loop(N);
			_exit(5);
		}
		write_all(p[1], &g, sizeof g);
		_exit(0);
	}
	reap(c, 0);
	read_full(p[0], &g, sizeof g);
	for (long i = 1; i <= N; i++) {
		flag = -1;
		SYS(prctl(PR_GET_CHILD_SUBREAPER, &flag));
		CHECK(flag == 1, "PR_GET_CHILD_SUBREAPER is %d, want 1", flag);
		say("subreaper, grandchild %d", g);
		tick();
	}
	reap(g, 5);
	done("grandchild reaped by the subreaper");
}
