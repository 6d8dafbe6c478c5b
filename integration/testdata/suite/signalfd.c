/* signalfd: a child sends SIGUSR1 with a value to the parent, which reads it
 * from a signalfd, checks sender and value and answers with SIGUSR2 the child
 * waits for. */
#include "suite.h"
#include <sys/signalfd.h>

int main(int argc, char **argv)
{
	sigset_t m;
	pid_t k, parent = getpid();
	int fd;
	suite_init(argc, argv);
	sigemptyset(&m);
	sigaddset(&m, SIGUSR1);
	sigaddset(&m, SIGUSR2);
	sigprocmask(SIG_BLOCK, &m, NULL);
	fd = SYS(signalfd(-1, &m, SFD_CLOEXEC));
	k = SYS(fork());
	if (k == 0) {
		sigset_t w;
		siginfo_t si;
		set_tag("child");
		sigemptyset(&w);
		sigaddset(&w, SIGUSR2);
		for (long i = 1; i <= N; i++) {
			union sigval v = {.sival_int = (int)i};
			SYS(sigqueue(parent, SIGUSR1, v));
			while (sigwaitinfo(&w, &si) < 0)
				CHECK(errno == EINTR, "sigwaitinfo: %s", strerror(errno));
			CHECK(si.si_pid == parent && si.si_value.sival_int == (int)i, "answer from %d value %d, want %d value %ld",
			      si.si_pid, si.si_value.sival_int, parent, i);
			say("answered %ld", i);
			tick();
		}
		_exit(0);
	}
	for (long i = 1; i <= N; i++) {
		struct signalfd_siginfo s;
		union sigval v = {.sival_int = (int)i};
		read_full(fd, &s, sizeof s);
		CHECK(s.ssi_signo == SIGUSR1 && s.ssi_pid == (uint32_t)k && s.ssi_int == (int)i,
		      "signalfd gave signal %u from %u value %d, want %d from %d value %ld", s.ssi_signo, s.ssi_pid, s.ssi_int, SIGUSR1, k, i);
		SYS(sigqueue(k, SIGUSR2, v));
		say("got %ld", i);
	}
	reap(k, 0);
	done("%ld signals through signalfd", N);
}
