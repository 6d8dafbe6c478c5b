/* stopped: the parent SIGSTOPs a counting child for the middle of the run,
 * checks that it does not count while stopped, then SIGCONTs it and checks
 * that it counts again. The child's count is in a shared anonymous page. */
#include "suite.h"
#include <sys/mman.h>

static volatile long *cnt;

static long get(void) { return *cnt; }

int main(int argc, char **argv)
{
	pid_t c;
	int st;
	long last, stopAt, contAt;
	suite_init(argc, argv);
	cnt = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(cnt != MAP_FAILED, "mmap: %s", strerror(errno));
	last = 0;
	c = SYS(fork());
	if (c == 0) {
		set_tag("child");
		for (long i = 1; i <= N; i++) {
			*cnt = i;
			say("count %ld", i);
			tick();
		}
		_exit(0);
	}
	stopAt = N / 10;
	contAt = N * 7 / 10;
	for (long i = 1; i <= N; i++) {
		long v = get();
		if (i == stopAt) {
			SYS(kill(c, SIGSTOP));
			CHECK(waitpid(c, &st, WUNTRACED) == c && WIFSTOPPED(st), "child not reported stopped: %#x", st);
			last = get();
		} else if (i > stopAt && i < contAt) {
			CHECK(v == last, "stopped child counted from %ld to %ld", last, v);
		} else if (i == contAt) {
			SYS(kill(c, SIGCONT));
			CHECK(waitpid(c, &st, WCONTINUED) == c && WIFCONTINUED(st), "child not reported continued: %#x", st);
		} else if (i == contAt + 10) {
			CHECK(v > last, "child did not count after SIGCONT (still %ld)", v);
		}
		say("child at %ld%s", v, i > stopAt && i < contAt ? " (stopped)" : "");
		tick();
	}
	reap(c, 0);
	CHECK(get() == N, "child ended at %ld, want %ld", get(), N);
	done("child stopped, resumed and finished");
}
