/* sock_dgram: unix datagram and seqpacket socketpairs (argument 3: dgram or
 * seqpacket); the child queues numbered messages of varying length ahead of
 * the parent, which checks number, length and body of each. */
#include "suite.h"
#include <sys/socket.h>

static size_t len_of(long i) { return 8 + (size_t)(i * 37 % 300); }

static void fill(unsigned char *b, long i)
{
	size_t n = len_of(i);
	memcpy(b, &i, sizeof i);
	for (size_t k = sizeof i; k < n; k++)
		b[k] = (unsigned char)(i + k);
}

int main(int argc, char **argv)
{
	int sv[2], type;
	pid_t k;
	unsigned char b[512], w[512];
	suite_init(argc, argv);
	CHECK(argc == 4, "usage: sock_dgram LOG TICKS dgram|seqpacket");
	type = strcmp(argv[3], "dgram") == 0 ? SOCK_DGRAM : SOCK_SEQPACKET;
	SYS(socketpair(AF_UNIX, type, 0, sv));
	k = SYS(fork());
	if (k == 0) {
		set_tag("writer");
		close(sv[0]);
		for (long i = 1; i <= N * 4; i++) {
			fill(w, i);
			while (send(sv[1], w, len_of(i), 0) < 0)
				CHECK(errno == EINTR, "send: %s", strerror(errno));
			if (i % 40 == 0)
				say("sent %ld", i);
		}
		_exit(0);
	}
	close(sv[1]);
	for (long i = 0; i < N; i++) {
		for (int j = 1; j <= 4; j++) {
			long want = i * 4 + j;
			ssize_t r;
			while ((r = recv(sv[0], b, sizeof b, 0)) < 0)
				CHECK(errno == EINTR, "recv: %s", strerror(errno));
			fill(w, want);
			CHECK((size_t)r == len_of(want) && memcmp(b, w, (size_t)r) == 0,
			      "message %ld: %zd bytes starting with %ld, want %zu bytes", want, r, *(long *)b, len_of(want));
		}
		say("received %ld", (i + 1) * 4);
		tick();
	}
	reap(k, 0);
	done("%ld %s messages", N * 4, argv[3]);
}
