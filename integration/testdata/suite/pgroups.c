/* pgroups: child A leads a new process group, child B joins it; everyone
 * checks the groups at every step; at the end main signals the group, and
 * both children must get it. */
#include "suite.h"

static volatile sig_atomic_t got;
static void on_usr1(int s) { (void)s; got = 1; }

static void member(pid_t leader)
{
	for (long i = 1; !got; i++) {
		CHECK(getpgid(0) == leader, "group %d, want %d", getpgid(0), leader);
		CHECK(i < 4 * N, "never got the group's SIGUSR1");
		say("group %d", leader);
		tick();
	}
	_exit(0);
}

int main(int argc, char **argv)
{
	pid_t a, b, pg = getpgid(0);
	sigset_t m;
	suite_init(argc, argv);
	signal(SIGUSR1, on_usr1);
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigprocmask(SIG_BLOCK, &m, NULL); /* main must not get it */
	a = SYS(fork());
	if (a == 0) {
		set_tag("a");
		SYS(setpgid(0, 0));
		sigprocmask(SIG_UNBLOCK, &m, NULL);
		member(getpid());
	}
	setpgid(a, a); /* whichever runs first */
	b = SYS(fork());
	if (b == 0) {
		set_tag("b");
		SYS(setpgid(0, a));
		sigprocmask(SIG_UNBLOCK, &m, NULL);
		member(a);
	}
	setpgid(b, a);
	for (long i = 1; i <= N; i++) {
		CHECK(getpgid(a) == a && getpgid(b) == a, "groups of a, b: %d, %d, want %d", getpgid(a), getpgid(b), a);
		CHECK(getpgid(0) == pg, "own group %d, want %d", getpgid(0), pg);
		say("groups ok");
		tick();
	}
	SYS(kill(-a, SIGUSR1));
	reap(a, 0);
	reap(b, 0);
	done("process group signalled");
}
