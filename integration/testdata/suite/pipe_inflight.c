/* pipe_inflight: a child writes numbered records into a pipe as fast as it
 * can, far ahead of the parent, which reads a few per step and checks that
 * each number arrives once and in order. */
#include "suite.h"
#include <sys/ioctl.h>

#define PER 64

int main(int argc, char **argv)
{
	int p[2];
	pid_t k;
	char b[REC + 1];
	suite_init(argc, argv);
	SYS(pipe(p));
	k = SYS(fork());
	if (k == 0) {
		set_tag("writer");
		close(p[0]);
		for (long i = 1; i <= N * PER; i++) {
			rec_make(b, i);
			write_all(p[1], b, REC);
			if (i % (PER * 10) == 0)
				say("wrote %ld", i);
		}
		_exit(0);
	}
	close(p[1]);
	for (long i = 0; i < N; i++) {
		int queued = 0;
		for (int j = 1; j <= PER; j++) {
			read_full(p[0], b, REC);
			rec_check(b, i * PER + j);
		}
		SYS(ioctl(p[0], FIONREAD, &queued));
		say("read %ld, %d bytes in flight", (i + 1) * PER, queued);
		tick();
	}
	CHECK(read(p[0], b, 1) == 0, "data after the last record");
	reap(k, 0);
	done("%ld records through the pipe", N * PER);
}
