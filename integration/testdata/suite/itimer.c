/* itimer: ITIMER_REAL every 50 ms counts SIGALRMs, which must keep pace
 * with CLOCK_MONOTONIC; getitimer must show the interval set. */
#include "rate.h"
#include <sys/time.h>

static volatile long hits;
static void on_alrm(int s) { (void)s; hits++; }

int main(int argc, char **argv)
{
	struct itimerval it = {{0, 50000}, {0, 50000}}, cur;
	struct sigaction sa = {.sa_handler = on_alrm, .sa_flags = SA_RESTART};
	long long t0;
	suite_init(argc, argv);
	sigaction(SIGALRM, &sa, NULL);
	t0 = now_ns();
	SYS(setitimer(ITIMER_REAL, &it, NULL));
	for (long i = 1; i <= N; i++) {
		tick();
		rate_check("ITIMER_REAL", t0, hits, 50, 3);
		SYS(getitimer(ITIMER_REAL, &cur));
		CHECK(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_usec == 50000, "interval is %ld.%06ld",
		      (long)cur.it_interval.tv_sec, (long)cur.it_interval.tv_usec);
		CHECK(cur.it_value.tv_sec == 0 && cur.it_value.tv_usec <= 50000, "next expiry in %ld.%06ld",
		      (long)cur.it_value.tv_sec, (long)cur.it_value.tv_usec);
		say("SIGALRM %ld", hits);
	}
	done("ITIMER_REAL fired %ld times", hits);
}
