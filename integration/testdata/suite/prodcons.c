/* prodcons: a producer sends length-prefixed messages of varying size over a
 * stream socketpair; the consumer counts them, checks each body, and checks
 * the count and sum the producer sends at the end. */
#include "suite.h"
#include <sys/socket.h>

struct hdr {
	uint32_t len; /* 0: end, body holds count and sum */
	uint32_t seq;
};

int main(int argc, char **argv)
{
	int sv[2];
	pid_t k;
	unsigned char body[2048];
	long count = 0, sum = 0;
	suite_init(argc, argv);
	SYS(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv));
	k = SYS(fork());
	if (k == 0) {
		set_tag("producer");
		for (long i = 1; i <= N * 8; i++) {
			struct hdr h = {(uint32_t)(1 + i * 131 % 2000), (uint32_t)i};
			for (uint32_t b = 0; b < h.len; b++)
				body[b] = (unsigned char)(i * 7 + b);
			write_all(sv[1], &h, sizeof h);
			write_all(sv[1], body, h.len);
			sum += h.len;
			if (i % 8 == 0) {
				say("produced %ld", i);
				tick();
			}
		}
		struct hdr end = {0, 0};
		long tot[2] = {N * 8, sum};
		write_all(sv[1], &end, sizeof end);
		write_all(sv[1], tot, sizeof tot);
		_exit(0);
	}
	for (;;) {
		struct hdr h;
		read_full(sv[0], &h, sizeof h);
		if (h.len == 0)
			break;
		count++;
		CHECK(h.seq == count && h.len <= sizeof body, "message %u of %u bytes, want message %ld", h.seq, h.len, count);
		read_full(sv[0], body, h.len);
		for (uint32_t b = 0; b < h.len; b++)
			CHECK(body[b] == (unsigned char)(count * 7 + b), "message %ld byte %u is wrong", count, b);
		sum += h.len;
		if (count % 8 == 0)
			say("consumed %ld", count);
	}
	long tot[2];
	read_full(sv[0], tot, sizeof tot);
	CHECK(tot[0] == count && tot[1] == sum, "consumed %ld messages, %ld bytes; producer sent %ld, %ld", count, sum, tot[0], tot[1]);
	reap(k, 0);
	done("%ld messages, %ld bytes", count, sum);
}
