/* eventfd: parent and child pass a value back and forth through two
 * eventfds, each adding one. */
#include "suite.h"
#include <sys/eventfd.h>

int main(int argc, char **argv)
{
	int a, b;
	pid_t k;
	uint64_t v;
	suite_init(argc, argv);
	a = SYS(eventfd(0, EFD_CLOEXEC));
	b = SYS(eventfd(0, EFD_CLOEXEC));
	k = SYS(fork());
	if (k == 0) {
		set_tag("child");
		for (long i = 1; i <= N; i++) {
			read_full(a, &v, sizeof v);
			CHECK(v == (uint64_t)(2 * i - 1), "eventfd a gave %lu, want %ld", (unsigned long)v, 2 * i - 1);
			v++;
			write_all(b, &v, sizeof v);
			say("value %lu", (unsigned long)v);
		}
		_exit(0);
	}
	for (long i = 1; i <= N; i++) {
		v = (uint64_t)(2 * i - 1);
		write_all(a, &v, sizeof v);
		read_full(b, &v, sizeof v);
		CHECK(v == (uint64_t)(2 * i), "eventfd b gave %lu, want %ld", (unsigned long)v, 2 * i);
		say("value %lu", (unsigned long)v);
		tick();
	}
	reap(k, 0);
	done("eventfd ping-pong to %ld", 2 * N);
}
