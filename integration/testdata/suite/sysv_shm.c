/* sysv_shm: a System V segment attached by parent and child (removed with
 * IPC_RMID once both hold it); they move a counter in it in turns and check
 * the attach count. */
#include "suite.h"
#include <sys/ipc.h>
#include <sys/shm.h>

int main(int argc, char **argv)
{
	volatile long *c;
	struct shmid_ds ds;
	pid_t k;
	int id;
	suite_init(argc, argv);
	id = SYS(shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600));
	info("ipc shm %d", id);
	c = shmat(id, NULL, 0);
	CHECK(c != (void *)-1, "shmat: %s", strerror(errno));
	k = SYS(fork());
	SYS(shmctl(id, IPC_RMID, NULL));
	if (k == 0) {
		set_tag("child");
		pingpong(c, 1, N);
		_exit(0);
	}
	for (long i = 0; i < N; i++) {
		long want = 2 * i, spins = 0;
		while (*c != want) {
			CHECK(*c == want - 1, "counter %ld, want %ld", *c, want);
			CHECK(++spins < 60000, "counter stuck at %ld", *c);
			sleep_ms(1);
		}
		SYS(shmctl(id, IPC_STAT, &ds));
		CHECK(ds.shm_nattch == 2, "segment %d attached %lu times, want 2", id, (unsigned long)ds.shm_nattch);
		*c = want + 1;
		say("counter %ld", want + 1);
		tick();
	}
	reap(k, 0);
	done("SysV shm counter at %ld", *c);
}
