/* sysv_sem: a System V semaphore locks a read-modify-write of a counter in a
 * shared anonymous page that parent and child both increment. */
#include "suite.h"
#include <sys/mman.h>
#include <sys/ipc.h>
#include <sys/sem.h>

static int semid;
static volatile long *cnt;

static void op(int d)
{
	struct sembuf b = {0, (short)d, 0};
	while (semop(semid, &b, 1) < 0)
		CHECK(errno == EINTR, "semop %d: %s", d, strerror(errno));
}

static void work(void)
{
	long v, last = 0;
	for (long i = 1; i <= N; i++) {
		op(-1);
		CHECK(semctl(semid, 0, GETVAL) == 0, "semaphore is %d while held", semctl(semid, 0, GETVAL));
		v = *cnt;
		CHECK(v >= last, "counter went back from %ld to %ld", last, v);
		v++;
		*cnt = v;
		last = v;
		op(1);
		say("counter %ld", v);
		tick();
	}
}

int main(int argc, char **argv)
{
	pid_t k;
	long v = 0;
	suite_init(argc, argv);
	cnt = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(cnt != MAP_FAILED, "mmap: %s", strerror(errno));
	semid = SYS(semget(IPC_PRIVATE, 1, IPC_CREAT | 0600));
	info("ipc sem %d", semid);
	SYS(semctl(semid, 0, SETVAL, 1));
	k = SYS(fork());
	if (k == 0) {
		set_tag("child");
		work();
		_exit(0);
	}
	work();
	reap(k, 0);
	v = *cnt;
	CHECK(v == 2 * N, "counter %ld, want %ld", v, 2 * N);
	SYS(semctl(semid, 0, IPC_RMID));
	done("semaphore-locked counter at %ld", v);
}
