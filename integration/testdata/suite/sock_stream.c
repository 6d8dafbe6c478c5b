/* sock_stream: a unix stream socketpair; the child streams numbered records
 * far ahead, the parent reads some per step and acknowledges each step with
 * a record the child checks. */
#include "suite.h"
#include <sys/socket.h>

#define PER 64

int main(int argc, char **argv)
{
	int sv[2];
	pid_t k;
	char b[REC + 1];
	suite_init(argc, argv);
	SYS(socketpair(AF_UNIX, SOCK_STREAM, 0, sv));
	k = SYS(fork());
	if (k == 0) {
		set_tag("writer");
		close(sv[0]);
		for (long i = 1; i <= N * PER; i++) {
			rec_make(b, i);
			write_all(sv[1], b, REC);
			if (i % PER == 0 && i / PER > 20) {
				/* acks lag 20 steps behind what was sent */
				read_full(sv[1], b, REC);
				rec_check(b, i / PER - 20);
				say("acked %ld", i / PER - 20);
			}
		}
		for (long a = N - 19; a <= N; a++) {
			read_full(sv[1], b, REC);
			rec_check(b, a);
			say("acked %ld", a);
		}
		_exit(0);
	}
	close(sv[1]);
	for (long i = 0; i < N; i++) {
		for (int j = 1; j <= PER; j++) {
			read_full(sv[0], b, REC);
			rec_check(b, i * PER + j);
		}
		rec_make(b, i + 1);
		write_all(sv[0], b, REC);
		say("read %ld", (i + 1) * PER);
		tick();
	}
	reap(k, 0);
	done("%ld records over a stream socketpair", N * PER);
}
