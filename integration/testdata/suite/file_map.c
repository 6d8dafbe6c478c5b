/* file_map: parent and child each open and map a regular file MAP_SHARED and
 * move a counter in it in turns; the file must hold the final value. */
#include "suite.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
	volatile long *c;
	char *path;
	pid_t k;
	int fd;
	long v;
	suite_init(argc, argv);
	path = scratch("shared.map");
	fd = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC, 0644));
	SYS(ftruncate(fd, 8192));
	close(fd);
	k = SYS(fork());
	fd = SYS(open(path, O_RDWR));
	c = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(c != MAP_FAILED, "mmap: %s", strerror(errno));
	if (k == 0) {
		set_tag("child");
		pingpong(c + 600, 1, N);
		_exit(0);
	}
	pingpong(c + 600, 0, N);
	reap(k, 0);
	SYS(msync((void *)c, 8192, MS_SYNC));
	CHECK(pread(fd, &v, sizeof v, 600 * sizeof(long)) == sizeof v && v == 2 * N, "file holds %ld, want %ld", v, 2 * N);
	done("file mapping counter at %ld", v);
}
