/* memfd_shared: a memfd mapped by the parent, and mapped again on its own by
 * the child from the inherited fd; they move a counter in it in turns. */
#include "suite.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
	volatile long *c;
	pid_t k;
	int fd;
	suite_init(argc, argv);
	fd = SYS(memfd_create("suite-counter", MFD_CLOEXEC));
	SYS(ftruncate(fd, 8192));
	k = SYS(fork());
	c = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(c != MAP_FAILED, "mmap: %s", strerror(errno));
	if (k == 0) {
		set_tag("child");
		pingpong(c + 512, 1, N);
		_exit(0);
	}
	pingpong(c + 512, 0, N);
	reap(k, 0);
	long v;
	CHECK(pread(fd, &v, sizeof v, 4096) == sizeof v && v == 2 * N, "memfd holds %ld, want %ld", v, 2 * N);
	done("memfd counter at %ld", v);
}
