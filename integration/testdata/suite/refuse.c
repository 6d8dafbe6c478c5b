/* refuse: one process holding a file descriptor the checkpointer must refuse
 * (argument 3: tcp PORT, udp, io_uring, userfaultfd, perf). It logs
 * "I main refuse pid=P fd=F kind=K" and then uses the fd every step. */
#include "suite.h"
#include <arpa/inet.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

int main(int argc, char **argv)
{
	const char *kind;
	int a = -1;
	struct sockaddr_in sin = {.sin_family = AF_INET};
	long long prev = 0;
	suite_init(argc, argv);
	CHECK(argc >= 4, "usage: refuse LOG TICKS KIND [PORT]");
	kind = argv[3];
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (strcmp(kind, "tcp") == 0) {
		CHECK(argc == 5, "tcp needs a port");
		sin.sin_port = htons((uint16_t)atoi(argv[4]));
		a = SYS(socket(AF_INET, SOCK_STREAM, 0));
		SYS(connect(a, (struct sockaddr *)&sin, sizeof sin));
	} else if (strcmp(kind, "udp") == 0) {
		socklen_t l = sizeof sin;
		a = SYS(socket(AF_INET, SOCK_DGRAM, 0));
		SYS(bind(a, (struct sockaddr *)&sin, sizeof sin));
		SYS(getsockname(a, (struct sockaddr *)&sin, &l));
		SYS(connect(a, (struct sockaddr *)&sin, sizeof sin));
	} else if (strcmp(kind, "io_uring") == 0) {
		unsigned char params[120] = {0}; /* struct io_uring_params */
		a = (int)syscall(425 /* io_uring_setup */, 4, params);
		if (a < 0)
			skip("io_uring_setup: %s", strerror(errno));
	} else if (strcmp(kind, "userfaultfd") == 0) {
		struct uffdio_api api = {.api = UFFD_API};
		a = (int)syscall(SYS_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY);
		if (a < 0)
			skip("userfaultfd: %s", strerror(errno));
		SYS(ioctl(a, UFFDIO_API, &api));
	} else if (strcmp(kind, "perf") == 0) {
		struct perf_event_attr pa = {.type = PERF_TYPE_SOFTWARE, .size = sizeof pa,
					     .config = PERF_COUNT_SW_TASK_CLOCK, .exclude_kernel = 1, .exclude_hv = 1};
		a = (int)syscall(SYS_perf_event_open, &pa, 0, -1, -1, 0);
		if (a < 0)
			skip("perf_event_open: %s", strerror(errno));
	} else {
		fail("unknown kind %s", kind);
	}
	info("refuse pid=%d fd=%d kind=%s", getpid(), a, kind);
	for (long i = 1; i <= N; i++) {
		char rec[REC + 1], got[REC + 1];
		rec_make(rec, i);
		if (strcmp(kind, "tcp") == 0 || strcmp(kind, "udp") == 0) {
			write_all(a, rec, REC);
			read_full(a, got, REC);
			rec_check(got, i);
		} else if (strcmp(kind, "perf") == 0) {
			long long v;
			read_full(a, &v, sizeof v);
			CHECK(v >= prev, "task clock went back from %lld to %lld", prev, v);
			prev = v;
		} else {
			CHECK(fcntl(a, F_GETFD) >= 0, "fd %d is gone", a);
		}
		say("%s fd in use, step %ld", kind, i);
		tick();
	}
	done("%s job finished", kind);
}
