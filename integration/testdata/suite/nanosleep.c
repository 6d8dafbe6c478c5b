/* nanosleep: relative nanosleep and absolute clock_nanosleep alternate; each
 * sleep must last at least what was asked, CLOCK_MONOTONIC must never go
 * back, and with no signal handler a sleep must never fail with EINTR. */
#include "suite.h"

int main(int argc, char **argv)
{
	long long last;
	suite_init(argc, argv);
	last = now_ns();
	for (long i = 1; i <= N; i++) {
		long long t0 = now_ns(), t1;
		struct timespec ts;
		CHECK(t0 >= last, "CLOCK_MONOTONIC went back by %lld ns", last - t0);
		if (i % 2) {
			ts = (struct timespec){0, TICK_MS * 1000000L};
			CHECK(nanosleep(&ts, NULL) == 0, "nanosleep: %s", strerror(errno));
		} else {
			long long until = t0 + TICK_MS * 1000000LL;
			int r;
			ts = (struct timespec){until / 1000000000LL, until % 1000000000LL};
			r = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
			CHECK(r == 0, "clock_nanosleep: %s", strerror(r));
		}
		t1 = now_ns();
		CHECK(t1 - t0 >= TICK_MS * 1000000LL, "sleep %ld lasted %lld ns, asked %d ms", i, t1 - t0, TICK_MS);
		last = t1;
		say("slept %lld us", (t1 - t0) / 1000);
	}
	done("%ld sleeps", N);
}
