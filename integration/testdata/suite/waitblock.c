/* waitblock: the parent sits in waitpid for the whole run while its child
 * sleeps and counts; waitpid must neither fail with EINTR (no handler is
 * installed) nor return early. */
#include "suite.h"

int main(int argc, char **argv)
{
	pid_t c, r;
	int st;
	long long t0;
	suite_init(argc, argv);
	c = SYS(fork());
	if (c == 0) {
		set_tag("child");
		count_loop(N);
		_exit(7);
	}
	t0 = now_ns();
	r = waitpid(c, &st, 0);
	CHECK(r == c, "waitpid returned %d: %s", r, strerror(errno));
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 7, "child status %#x, want exit 7", st);
	CHECK(now_ns() - t0 >= (N - 1) * TICK_MS * 1000000LL,
	      "waitpid returned after %lld ms, before the child could have finished", (now_ns() - t0) / 1000000);
	done("waitpid returned 7");
}
