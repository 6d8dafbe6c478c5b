/* alarm: alarm(1) re-armed from its own SIGALRM handler counts seconds,
 * which must keep pace with CLOCK_MONOTONIC. */
#include "suite.h"
#include <sys/time.h>

static volatile long hits;
static void on_alrm(int s)
{
	(void)s;
	hits++;
	alarm(1);
}

int main(int argc, char **argv)
{
	struct sigaction sa = {.sa_handler = on_alrm, .sa_flags = SA_RESTART};
	long long t0;
	suite_init(argc, argv);
	sigaction(SIGALRM, &sa, NULL);
	t0 = now_ns();
	alarm(1);
	for (long i = 1; i <= N; i++) {
		long el;
		struct itimerval cur;
		tick();
		el = (long)((now_ns() - t0) / 1000000000LL);
		/* Each re-arm runs a little late, so the count may trail. */
		CHECK(hits <= el && hits >= el - 1 - el / 20, "%ld alarms in %ld s", hits, el);
		SYS(getitimer(ITIMER_REAL, &cur));
		CHECK(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_usec == 0 && cur.it_value.tv_sec <= 1,
		      "alarm timer is %ld.%06ld every %ld.%06ld, want at most 1 s, once", (long)cur.it_value.tv_sec,
		      (long)cur.it_value.tv_usec, (long)cur.it_interval.tv_sec, (long)cur.it_interval.tv_usec);
		say("alarms %ld after %ld s", hits, el);
	}
	done("%ld alarms", hits);
}
