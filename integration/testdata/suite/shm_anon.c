/* shm_anon: parent and child move a counter in a MAP_SHARED|MAP_ANONYMOUS
 * page in turns. */
#include "suite.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
	volatile long *c;
	pid_t k;
	suite_init(argc, argv);
	c = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(c != MAP_FAILED, "mmap: %s", strerror(errno));
	k = SYS(fork());
	if (k == 0) {
		set_tag("child");
		pingpong(c, 1, N);
		_exit(0);
	}
	pingpong(c, 0, N);
	reap(k, 0);
	CHECK(*c == 2 * N, "final counter %ld, want %ld", *c, 2 * N);
	done("shared anonymous counter at %ld", *c);
}
