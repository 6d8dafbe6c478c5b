/* dup_offset: fds made with dup and F_DUPFD_CLOEXEC share one offset with
 * the original, a second open of the file has its own; writes go through
 * each in turn and every offset is checked. */
#include "suite.h"

int main(int argc, char **argv)
{
	int a, b, c, o;
	char *path;
	suite_init(argc, argv);
	path = scratch("dup.txt");
	a = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC, 0644));
	b = SYS(dup(a));
	c = SYS(fcntl(a, F_DUPFD_CLOEXEC, 20));
	o = SYS(open(path, O_RDONLY));
	for (long i = 1; i <= N; i++) {
		int fds[3] = {a, b, c}, w = fds[i % 3];
		char rec[REC + 1], got[REC + 1];
		off_t at = (off_t)(i - 1) * REC;
		for (int k = 0; k < 3; k++)
			CHECK(lseek(fds[k], 0, SEEK_CUR) == at, "fd %d at %ld, want %ld", fds[k], (long)lseek(fds[k], 0, SEEK_CUR), (long)at);
		CHECK(lseek(o, 0, SEEK_CUR) == (off_t)(i / 2) * REC, "separately opened fd %d moved to %ld", o, (long)lseek(o, 0, SEEK_CUR));
		CHECK(fcntl(c, F_GETFD) == FD_CLOEXEC && fcntl(a, F_GETFD) == 0 && fcntl(b, F_GETFD) == 0, "close-on-exec flags changed");
		rec_make(rec, i);
		write_all(w, rec, REC);
		if (i % 2 == 1) {
			read_full(o, got, REC);
			rec_check(got, i / 2 + 1);
		}
		say("wrote %ld through fd %d", i, w);
		tick();
	}
	done("dup'ed fds shared one offset for %ld writes", N);
}
