/* dirfd: files are made and read through openat on a directory fd, whose
 * inode must stay the directory's. */
#include "suite.h"

int main(int argc, char **argv)
{
	int d, fd;
	char *dir, name[32], rec[REC + 1];
	struct stat a, b;
	suite_init(argc, argv);
	dir = scratch("dirfd.d");
	mkdir(dir, 0755);
	d = SYS(open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	for (long i = 1; i <= N; i++) {
		SYS(fstat(d, &a));
		SYS(stat(dir, &b));
		CHECK(a.st_ino == b.st_ino && a.st_dev == b.st_dev && S_ISDIR(a.st_mode), "directory fd no longer names %s", dir);
		snprintf(name, sizeof name, "f%ld", i);
		fd = SYS(openat(d, name, O_WRONLY | O_CREAT | O_TRUNC, 0644));
		rec_make(rec, i);
		write_all(fd, rec, REC);
		close(fd);
		snprintf(name, sizeof name, "f%ld", (i + 1) / 2);
		fd = SYS(openat(d, name, O_RDONLY));
		read_full(fd, rec, REC);
		rec_check(rec, (i + 1) / 2);
		close(fd);
		say("openat f%ld", i);
		tick();
	}
	done("%ld files through a directory fd", N);
}
