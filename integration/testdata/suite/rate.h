/* rate.h: checks that a periodic event keeps pace with CLOCK_MONOTONIC. */
#ifndef RATE_H
#define RATE_H
#include "suite.h"

/* rate_check fails when count events of period_ms since t0 are more than
 * slack periods off the monotonic time that passed: a restored timer that
 * fires a burst, stops or runs at another rate. */
static void rate_check(const char *what, long long t0, long count, long period_ms, long slack)
{
	long long el = (now_ns() - t0) / 1000000;
	long expect = (long)(el / period_ms);
	CHECK(count >= expect - slack && count <= expect + slack,
	      "%s fired %ld times in %lld ms, want %ld +- %ld", what, count, el, expect, slack);
}
#endif
