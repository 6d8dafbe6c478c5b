/* posix_shm: parent and child each shm_open the same object by name and map
 * it; they move a counter in it in turns. */
#include "suite.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
	volatile long *c;
	char name[NAME_MAX];
	pid_t k;
	int fd;
	suite_init(argc, argv);
	snprintf(name, sizeof name, "/%.200s-posix-shm", uniq());
	fd = SYS(shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600));
	SYS(ftruncate(fd, 4096));
	close(fd);
	k = SYS(fork());
	fd = SYS(shm_open(name, O_RDWR, 0));
	c = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(c != MAP_FAILED, "mmap: %s", strerror(errno));
	close(fd);
	if (k == 0) {
		set_tag("child");
		pingpong(c, 1, N);
		_exit(0);
	}
	pingpong(c, 0, N);
	reap(k, 0);
	SYS(shm_unlink(name));
	done("POSIX shm counter at %ld", *c);
}
