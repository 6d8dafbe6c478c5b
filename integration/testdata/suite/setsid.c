/* setsid: a child starts its own session; both check the session and group
 * ids of themselves and of each other at every step. */
#include "suite.h"

int main(int argc, char **argv)
{
	pid_t c, sid = getsid(0), pg = getpgid(0);
	int p[2];
	char b;
	suite_init(argc, argv);
	SYS(pipe(p));
	c = SYS(fork());
	if (c == 0) {
		set_tag("child");
		SYS(setsid());
		write_all(p[1], "x", 1);
		for (long i = 1; i <= N; i++) {
			CHECK(getsid(0) == getpid() && getpgid(0) == getpid(),
			      "session %d group %d, want both %d", getsid(0), getpgid(0), getpid());
			say("session %d", getsid(0));
			tick();
		}
		_exit(0);
	}
	read_full(p[0], &b, 1);
	for (long i = 1; i <= N; i++) {
		CHECK(getsid(c) == c, "child's session is %d, want %d", getsid(c), c);
		CHECK(getsid(0) == sid && getpgid(0) == pg, "own session/group %d/%d, want %d/%d", getsid(0), getpgid(0), sid, pg);
		say("child session %d", c);
		tick();
	}
	reap(c, 0);
	done("sessions kept");
}
