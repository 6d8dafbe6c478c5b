/* posix_sem: a named POSIX semaphore (sem_open) locks a read-modify-write of
 * a counter in a shared anonymous page that parent and child both increment. */
#include "suite.h"
#include <sys/mman.h>
#include <semaphore.h>

static sem_t *sem;
static volatile long *cnt;

static void work(void)
{
	long v, last = 0;
	for (long i = 1; i <= N; i++) {
		int val;
		while (sem_wait(sem) < 0)
			CHECK(errno == EINTR, "sem_wait: %s", strerror(errno));
		SYS(sem_getvalue(sem, &val));
		CHECK(val == 0, "semaphore is %d while held", val);
		v = *cnt;
		CHECK(v >= last, "counter went back from %ld to %ld", last, v);
		v++;
		*cnt = v;
		last = v;
		SYS(sem_post(sem));
		say("counter %ld", v);
		tick();
	}
}

int main(int argc, char **argv)
{
	char name[NAME_MAX];
	pid_t k;
	long v = 0;
	suite_init(argc, argv);
	cnt = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(cnt != MAP_FAILED, "mmap: %s", strerror(errno));
	snprintf(name, sizeof name, "/%.200s-sem", uniq());
	sem = sem_open(name, O_CREAT | O_EXCL, 0600, 1);
	CHECK(sem != SEM_FAILED, "sem_open %s: %s", name, strerror(errno));
	k = SYS(fork());
	if (k == 0) {
		set_tag("child");
		work();
		_exit(0);
	}
	work();
	reap(k, 0);
	SYS(sem_unlink(name));
	v = *cnt;
	CHECK(v == 2 * N, "counter %ld, want %ld", v, 2 * N);
	done("sem_open-locked counter at %ld", v);
}
