/* fifo: a named pipe (mkfifo) between a writing child, far ahead, and the
 * reading parent, which checks the sequence. */
#include "suite.h"
#include <sys/ioctl.h>

#define PER 32

int main(int argc, char **argv)
{
	char *path, b[REC + 1];
	pid_t k;
	int fd;
	suite_init(argc, argv);
	path = scratch("fifo");
	unlink(path);
	SYS(mkfifo(path, 0600));
	k = SYS(fork());
	if (k == 0) {
		set_tag("writer");
		fd = SYS(open(path, O_WRONLY));
		for (long i = 1; i <= N * PER; i++) {
			rec_make(b, i);
			write_all(fd, b, REC);
			if (i % (PER * 10) == 0)
				say("wrote %ld", i);
		}
		_exit(0);
	}
	fd = SYS(open(path, O_RDONLY));
	for (long i = 0; i < N; i++) {
		int queued = 0;
		for (int j = 1; j <= PER; j++) {
			read_full(fd, b, REC);
			rec_check(b, i * PER + j);
		}
		SYS(ioctl(fd, FIONREAD, &queued));
		say("read %ld, %d bytes in flight", (i + 1) * PER, queued);
		tick();
	}
	CHECK(read(fd, b, 1) == 0, "data after the last record");
	reap(k, 0);
	done("%ld records through the fifo", N * PER);
}
