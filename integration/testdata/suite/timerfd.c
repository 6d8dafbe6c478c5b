/* timerfd: a periodic timerfd of 50 ms is read every step; the expirations
 * must keep pace with CLOCK_MONOTONIC (no burst, no stall) and the timer's
 * interval must stay as set. */
#include "rate.h"
#include <sys/timerfd.h>

int main(int argc, char **argv)
{
	struct itimerspec its = {{0, 50000000}, {0, 50000000}}, cur;
	long long t0;
	long total = 0;
	int fd;
	suite_init(argc, argv);
	fd = SYS(timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC));
	t0 = now_ns();
	SYS(timerfd_settime(fd, 0, &its, NULL));
	for (long i = 1; i <= N; i++) {
		uint64_t n;
		read_full(fd, &n, sizeof n);
		total += (long)n;
		CHECK(n <= 40, "one read returned %lu expirations", (unsigned long)n);
		rate_check("timerfd", t0, total, 50, 3);
		SYS(timerfd_gettime(fd, &cur));
		CHECK(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 50000000, "interval changed to %ld.%09ld",
		      (long)cur.it_interval.tv_sec, cur.it_interval.tv_nsec);
		say("expirations %ld (+%lu)", total, (unsigned long)n);
		sleep_ms(TICK_MS / 2);
	}
	done("timerfd fired %ld times", total);
}
