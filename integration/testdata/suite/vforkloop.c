/* vforkloop: the parent spends most of each step waiting for a vfork child
 * that has not exec'd or exited yet (it sleeps first), as a shell that
 * vforks its commands does for a moment; most checkpoints land in that
 * window and must wait for the child to be done. */
#include "suite.h"

int main(int argc, char **argv)
{
	suite_init(argc, argv);
	for (long i = 1; i <= N; i++) {
		pid_t c = vfork();
		if (c == 0) {
			struct timespec ts = {0, TICK_MS * 1000000L};
			nanosleep(&ts, NULL);
			_exit(7);
		}
		SYS(c);
		reap(c, 7);
		say("vfork child %ld exited", i);
		sleep_ms(TICK_MS / 3);
	}
	done("%ld vfork children exited 7", N);
}
