/* thread_masks: four threads, each with its own blocked signal mask and a
 * thread-directed signal pending against it (tgkill), check mask, pending
 * set and tid at every step. */
#include "suite.h"
#include <pthread.h>

static pid_t tids[4];
static pthread_barrier_t ready;

static void *run(void *arg)
{
	long k = (long)arg;
	sigset_t m, cur, p;
	pid_t tid = (pid_t)syscall(SYS_gettid);
	int sig = SIGRTMIN + 2 + (int)k;
	char tag[16];
	snprintf(tag, sizeof tag, "t%ld", k);
	sigemptyset(&m);
	for (int j = 0; j <= k; j++)
		sigaddset(&m, SIGRTMIN + 2 + j);
	pthread_sigmask(SIG_SETMASK, &m, NULL);
	tids[k] = tid;
	pthread_barrier_wait(&ready);
	pthread_barrier_wait(&ready); /* main has sent the signals */
	long seq = 0;
	for (long i = 1; i <= N; i++) {
		pthread_sigmask(SIG_SETMASK, NULL, &cur);
		for (int j = 0; j < 4; j++)
			CHECK(sigismember(&cur, SIGRTMIN + 2 + j) == (j <= k), "thread %ld: signal %d %sblocked", k,
			      SIGRTMIN + 2 + j, j <= k ? "not " : "");
		SYS(sigpending(&p));
		CHECK(sigismember(&p, sig) == 1, "thread %ld: its signal %d is not pending", k, sig);
		CHECK(syscall(SYS_gettid) == tid, "thread %ld: tid %ld, was %d", k, (long)syscall(SYS_gettid), tid);
		char buf[128];
		int n = snprintf(buf, sizeof buf, "T %s %ld mask ok, tid %d\n", tag, ++seq, tid);
		s_write(s_logfd, buf, (size_t)n);
		tick();
	}
	return NULL;
}

static void ignore(int s) { (void)s; }

int main(int argc, char **argv)
{
	pthread_t th[4];
	sigset_t all;
	suite_init(argc, argv);
	for (int k = 0; k < 4; k++)
		signal(SIGRTMIN + 2 + k, ignore); /* a handler, so the pending signal is not discarded */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, NULL); /* main takes none of them */
	pthread_barrier_init(&ready, NULL, 5);
	for (long k = 0; k < 4; k++)
		CHECK(pthread_create(&th[k], NULL, run, (void *)k) == 0, "pthread_create");
	pthread_barrier_wait(&ready);
	for (int k = 0; k < 4; k++)
		SYS(syscall(SYS_tgkill, getpid(), tids[k], SIGRTMIN + 2 + k));
	pthread_barrier_wait(&ready);
	for (int k = 0; k < 4; k++)
		pthread_join(th[k], NULL);
	done("4 threads kept their masks and pending signals");
}
