/* shm_unlinked: a POSIX shm object is mapped, then unlinked while mapped;
 * parent and child (inheriting the mapping) move a counter in it in turns,
 * and the name must stay gone. */
#include "suite.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
	volatile long *c;
	char name[NAME_MAX];
	pid_t k;
	int fd;
	suite_init(argc, argv);
	snprintf(name, sizeof name, "/%.200s-unlinked", uniq());
	fd = SYS(shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600));
	SYS(ftruncate(fd, 4096));
	c = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(c != MAP_FAILED, "mmap: %s", strerror(errno));
	close(fd);
	SYS(shm_unlink(name));
	k = SYS(fork());
	if (k == 0) {
		set_tag("child");
		pingpong(c, 1, N);
		_exit(0);
	}
	for (long i = 0; i < N; i++) {
		long want = 2 * i, spins = 0;
		while (*c != want) {
			CHECK(*c == want - 1, "counter %ld, want %ld", *c, want);
			CHECK(++spins < 60000, "counter stuck at %ld", *c);
			sleep_ms(1);
		}
		CHECK(shm_open(name, O_RDWR, 0) < 0 && errno == ENOENT, "unlinked %s exists again", name);
		*c = want + 1;
		say("counter %ld", want + 1);
		tick();
	}
	reap(k, 0);
	done("unlinked shm counter at %ld", *c);
}
