/* pdeathsig: a child sets PR_SET_PDEATHSIG and checks it at every step. */
#include "suite.h"
#include <sys/prctl.h>

int main(int argc, char **argv)
{
	pid_t c;
	suite_init(argc, argv);
	c = SYS(fork());
	if (c == 0) {
		set_tag("child");
		SYS(prctl(PR_SET_PDEATHSIG, SIGTERM));
		for (long i = 1; i <= N; i++) {
			int sig = -1;
			SYS(prctl(PR_GET_PDEATHSIG, &sig));
			CHECK(sig == SIGTERM, "PR_GET_PDEATHSIG is %d, want %d", sig, SIGTERM);
			say("pdeathsig %d", sig);
			tick();
		}
		_exit(0);
	}
	count_loop(N);
	reap(c, 0);
	done("pdeathsig kept");
}
