/* sigpending: SIGUSR1 is raised while blocked and must stay pending (and
 * undelivered) until the program unblocks it late in the run; then it must
 * be delivered exactly once. */
#include "suite.h"

static volatile sig_atomic_t hits;
static void on_usr1(int s) { (void)s; hits++; }

int main(int argc, char **argv)
{
	sigset_t m, p;
	long unblockAt;
	suite_init(argc, argv);
	signal(SIGUSR1, on_usr1);
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	SYS(sigprocmask(SIG_BLOCK, &m, NULL));
	SYS(raise(SIGUSR1));
	unblockAt = N * 8 / 10;
	for (long i = 1; i <= N; i++) {
		SYS(sigpending(&p));
		if (i < unblockAt) {
			CHECK(sigismember(&p, SIGUSR1) == 1, "blocked SIGUSR1 is no longer pending");
			CHECK(hits == 0, "blocked SIGUSR1 was delivered");
		} else if (i == unblockAt) {
			SYS(sigprocmask(SIG_UNBLOCK, &m, NULL));
			CHECK(hits == 1, "unblocked SIGUSR1 delivered %d times, want once", (int)hits);
		} else {
			CHECK(hits == 1 && sigismember(&p, SIGUSR1) == 0, "SIGUSR1 delivered %d times, pending %d", (int)hits,
			      sigismember(&p, SIGUSR1));
		}
		say("pending %d delivered %d", sigismember(&p, SIGUSR1), (int)hits);
		tick();
	}
	done("pending signal delivered once");
}
