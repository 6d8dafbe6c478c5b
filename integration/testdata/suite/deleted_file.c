/* deleted_file: a file is written, unlinked while open, and then read back
 * and extended through its fd at every step. */
#include "suite.h"

int main(int argc, char **argv)
{
	int fd;
	char *path, rec[REC + 1];
	struct stat st;
	suite_init(argc, argv);
	path = scratch("deleted.txt");
	fd = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC, 0644));
	for (long i = 1; i <= 100; i++) {
		rec_make(rec, i);
		write_all(fd, rec, REC);
	}
	SYS(unlink(path));
	for (long i = 1; i <= N; i++) {
		long total = 100 + i - 1;
		SYS(fstat(fd, &st));
		CHECK(st.st_nlink == 0, "deleted file has %ld links", (long)st.st_nlink);
		CHECK(st.st_size == total * REC, "deleted file is %ld bytes, want %ld", (long)st.st_size, total * REC);
		for (long k = 1; k <= total; k += 7) {
			CHECK(pread(fd, rec, REC, (k - 1) * REC) == REC, "pread: %s", strerror(errno));
			rec_check(rec, k);
		}
		CHECK(access(path, F_OK) < 0, "%s exists again", path);
		rec_make(rec, total + 1);
		write_all(fd, rec, REC);
		say("deleted file holds %ld records", total + 1);
		tick();
	}
	done("deleted file read and extended");
}
