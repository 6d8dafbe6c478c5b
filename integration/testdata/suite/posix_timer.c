/* posix_timer: timer_create with SIGEV_SIGNAL (argument 3 "signal") or with
 * SIGEV_THREAD_ID aimed at one worker thread (argument 3 "thread"), every
 * 50 ms; the signals must carry the timer's value, reach the right thread
 * and keep pace with CLOCK_MONOTONIC, within 3 periods or the number given
 * as argument 4 (a slow emulated machine takes longer to restore a job,
 * time its clock counts and its re-armed timer does not). */
#include "rate.h"
#include <pthread.h>

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

static volatile long hits, wrong;
static volatile pid_t target;
static timer_t timer;

static void on_sig(int s, siginfo_t *si, void *u)
{
	(void)s;
	(void)u;
	if (si->si_code != SI_TIMER || si->si_value.sival_int != 4242 ||
	    (target != 0 && syscall(SYS_gettid) != target))
		wrong++;
	hits += 1 + timer_getoverrun(timer);
}

static void *worker(void *a)
{
	(void)a;
	target = (pid_t)syscall(SYS_gettid);
	for (;;)
		pause();
	return NULL;
}

int main(int argc, char **argv)
{
	struct sigaction sa = {.sa_sigaction = on_sig, .sa_flags = SA_SIGINFO | SA_RESTART};
	struct sigevent ev = {0};
	struct itimerspec its = {{0, 50000000}, {0, 50000000}}, cur;
	int thread;
	long slack = 3;
	long long t0;
	pthread_t th;
	suite_init(argc, argv);
	CHECK(argc == 4 || argc == 5, "usage: posix_timer LOG TICKS signal|thread [SLACK]");
	thread = strcmp(argv[3], "thread") == 0;
	if (argc == 5)
		slack = strtol(argv[4], NULL, 10);
	sigaction(SIGRTMIN, &sa, NULL);
	ev.sigev_signo = SIGRTMIN;
	ev.sigev_value.sival_int = 4242;
	ev.sigev_notify = SIGEV_SIGNAL;
	if (thread) {
		sigset_t m;
		CHECK(pthread_create(&th, NULL, worker, NULL) == 0, "pthread_create");
		while (target == 0)
			sleep_ms(1);
		sigemptyset(&m);
		sigaddset(&m, SIGRTMIN);
		pthread_sigmask(SIG_BLOCK, &m, NULL); /* only the worker may take it */
		ev.sigev_notify = SIGEV_THREAD_ID;
		ev.sigev_notify_thread_id = target;
	}
	SYS(timer_create(CLOCK_MONOTONIC, &ev, &timer));
	t0 = now_ns();
	SYS(timer_settime(timer, 0, &its, NULL));
	for (long i = 1; i <= N; i++) {
		tick();
		CHECK(wrong == 0, "%ld timer signals with the wrong code, value or thread", wrong);
		rate_check("POSIX timer", t0, hits, 50, slack);
		SYS(timer_gettime(timer, &cur));
		CHECK(cur.it_interval.tv_sec == 0 && cur.it_interval.tv_nsec == 50000000, "interval changed");
		say("timer signals %ld", hits);
	}
	done("POSIX timer (%s) fired %ld times", argv[3], hits);
}
