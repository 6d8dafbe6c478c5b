/* rtsig: a queue of ten blocked real-time signals with sigqueue values is
 * kept; every step one is taken (sigtimedwait) and one added, and the values
 * must come out in order, each once. */
#include "suite.h"

int main(int argc, char **argv)
{
	sigset_t m;
	long next = 0, sent = 0;
	int sig;
	suite_init(argc, argv);
	sig = SIGRTMIN + 1;
	sigemptyset(&m);
	sigaddset(&m, sig);
	SYS(sigprocmask(SIG_BLOCK, &m, NULL));
	for (; sent < 10; sent++)
		SYS(sigqueue(getpid(), sig, (union sigval){.sival_int = (int)sent}));
	for (long i = 1; i <= N; i++) {
		siginfo_t si;
		struct timespec zero = {0, 0};
		int r = (int)SYS(sigtimedwait(&m, &si, &zero));
		CHECK(r == sig && si.si_code == SI_QUEUE && si.si_value.sival_int == next,
		      "took signal %d code %d value %d, want %d value %ld", r, si.si_code, si.si_value.sival_int, sig, next);
		next++;
		SYS(sigqueue(getpid(), sig, (union sigval){.sival_int = (int)sent}));
		sent++;
		say("value %ld, %ld queued", next - 1, sent - next);
		tick();
	}
	done("%ld queued values in order", next);
}
