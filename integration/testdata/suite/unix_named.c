/* unix_named: a server listening on a unix socket path answers numbered
 * requests from one client, and halfway through accepts a second client on
 * the same listener. */
#include "suite.h"
#include <sys/socket.h>
#include <sys/un.h>

struct req {
	long n, sq;
};

static struct sockaddr_un addr;

static void client(int id, long from, long to)
{
	int s;
	struct req r;
	set_tag("client%d", id);
	s = SYS(socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
	SYS(connect(s, (struct sockaddr *)&addr, sizeof addr));
	for (long i = from; i <= to; i++) {
		r.n = i;
		r.sq = 0;
		write_all(s, &r, sizeof r);
		read_full(s, &r, sizeof r);
		CHECK(r.n == i && r.sq == i * i, "answer %ld/%ld to request %ld", r.n, r.sq, i);
		say("request %ld answered", i);
		tick();
	}
	_exit(0);
}

static void serve(int c, long from, long to)
{
	struct req r;
	for (long i = from; i <= to; i++) {
		read_full(c, &r, sizeof r);
		CHECK(r.n == i, "request %ld, want %ld", r.n, i);
		r.sq = i * i;
		write_all(c, &r, sizeof r);
		say("answered %ld", i);
	}
}

int main(int argc, char **argv)
{
	int l, c;
	pid_t k1, k2;
	long half;
	suite_init(argc, argv);
	addr.sun_family = AF_UNIX;
	snprintf(addr.sun_path, sizeof addr.sun_path, "%s", scratch("server.sock"));
	unlink(addr.sun_path);
	l = SYS(socket(AF_UNIX, SOCK_STREAM, 0));
	SYS(bind(l, (struct sockaddr *)&addr, sizeof addr));
	SYS(listen(l, 4));
	half = N / 2;
	k1 = SYS(fork());
	if (k1 == 0)
		client(1, 1, half);
	c = SYS(accept(l, NULL, NULL));
	serve(c, 1, half);
	close(c);
	reap(k1, 0);
	k2 = SYS(fork());
	if (k2 == 0)
		client(2, half + 1, N);
	c = SYS(accept(l, NULL, NULL));
	serve(c, half + 1, N);
	reap(k2, 0);
	done("%ld requests over two connections", N);
}
