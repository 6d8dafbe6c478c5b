/* nodelocal LOG TICKS DIR: what a job leaves on its node. Parent and child
 * move a counter in a POSIX shared memory object (/dev/shm) in turns; the
 * parent checks a second, 1 MiB object filled with a pattern, and appends a
 * record to a scratch file in DIR (a node-local /tmp) at every step,
 * checking the file's size and its last record. */
#include "suite.h"
#include <sys/mman.h>

#define BIG (1 << 20)

static unsigned char big_byte(size_t i) { return (unsigned char)(i * 7 + i / 4096); }

int main(int argc, char **argv)
{
	char small[NAME_MAX], large[NAME_MAX], path[PATH_MAX], rec[64], last[64];
	volatile long *c;
	unsigned char *b;
	pid_t k;
	int fd, out;
	suite_init(argc, argv);
	CHECK(argc == 4, "usage: nodelocal LOG TICKS DIR");
	snprintf(small, sizeof small, "/%.200s-node-small", uniq());
	snprintf(large, sizeof large, "/%.200s-node-large", uniq());
	snprintf(path, sizeof path, "%s/%.200s-node-scratch", argv[3], uniq());

	fd = SYS(shm_open(large, O_RDWR | O_CREAT | O_EXCL, 0600));
	SYS(ftruncate(fd, BIG));
	b = mmap(NULL, BIG, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(b != MAP_FAILED, "mmap: %s", strerror(errno));
	close(fd);
	for (size_t i = 0; i < BIG; i++)
		b[i] = big_byte(i);

	fd = SYS(shm_open(small, O_RDWR | O_CREAT | O_EXCL, 0600));
	SYS(ftruncate(fd, 4096));
	close(fd);
	out = SYS(open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600));
	k = SYS(fork());
	fd = SYS(shm_open(small, O_RDWR, 0));
	c = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	CHECK(c != MAP_FAILED, "mmap: %s", strerror(errno));
	close(fd);
	if (k == 0) {
		set_tag("child");
		pingpong(c, 1, N);
		_exit(0);
	}
	for (long i = 0; i < N; i++) {
		struct stat st;
		int n, in;
		long want = 2 * i, spins = 0;
		while (__atomic_load_n(c, __ATOMIC_SEQ_CST) != want) {
			CHECK(++spins < 60000, "shared counter stuck at %ld", *c);
			sleep_ms(1);
		}
		for (size_t j = (size_t)i * 4096 % BIG; j < BIG; j += 65536)
			CHECK(b[j] == big_byte(j), "the 1 MiB object's byte %zu is %u, want %u", j, b[j], big_byte(j));
		n = snprintf(rec, sizeof rec, "record %08ld\n", i + 1);
		write_all(out, rec, (size_t)n);
		SYS(fstat(out, &st));
		CHECK(st.st_size == (i + 1) * n, "scratch file is %lld bytes after %ld records of %d",
		      (long long)st.st_size, i + 1, n);
		in = SYS(open(path, O_RDONLY | O_CLOEXEC));
		SYS(pread(in, last, (size_t)n, st.st_size - n));
		close(in);
		CHECK(memcmp(last, rec, (size_t)n) == 0, "scratch file ends %.*s, want %s", n - 1, last, rec);
		__atomic_store_n(c, want + 1, __ATOMIC_SEQ_CST);
		say("counter %ld, %ld records", want + 1, i + 1);
		tick();
	}
	reap(k, 0);
	SYS(shm_unlink(small));
	SYS(shm_unlink(large));
	SYS(unlink(path));
	done("counter %ld, %ld records in %s", *c, N, path);
}
