/* fd_fork_shared: parent and child write in turns through one fd inherited
 * across fork (one open file description, one offset); whose turn it is
 * follows from the shared offset. Nothing may be overwritten. */
#include "suite.h"

#define LEN 12

static void writer(int fd, int side)
{
	char b[32];
	for (long i = 1; i <= N; i++) {
		long spins = 0;
		off_t off, want = (off_t)(2 * (i - 1) + side) * LEN;
		while ((off = SYS(lseek(fd, 0, SEEK_CUR))) != want) {
			CHECK(off == want - LEN, "shared offset %ld, want %ld or %ld", (long)off, (long)(want - LEN), (long)want);
			CHECK(++spins < 60000, "shared offset stuck at %ld: the other writer's offset moves are not shared", (long)off);
			sleep_ms(1);
		}
		struct stat st;
		SYS(fstat(fd, &st));
		CHECK(st.st_size == off, "file is %ld bytes, offset %ld", (long)st.st_size, (long)off);
		snprintf(b, sizeof b, "%c %09ld", side ? 'c' : 'p', i % 1000000000);
		b[LEN - 1] = '\n';
		write_all(fd, b, LEN);
		say("wrote %ld at %ld", i, (long)off);
		tick();
	}
}

int main(int argc, char **argv)
{
	int fd;
	pid_t k;
	char *path, b[32];
	suite_init(argc, argv);
	path = scratch("shared-offset.txt");
	fd = SYS(open(path, O_RDWR | O_CREAT | O_TRUNC, 0644));
	k = SYS(fork());
	if (k == 0) {
		set_tag("child");
		writer(fd, 1);
		_exit(0);
	}
	writer(fd, 0);
	reap(k, 0);
	for (long i = 0; i < 2 * N; i++) {
		char want[32];
		CHECK(pread(fd, b, LEN, i * LEN) == LEN, "short file");
		snprintf(want, sizeof want, "%c %09ld", i % 2 ? 'c' : 'p', (i / 2 + 1) % 1000000000);
		want[LEN - 1] = '\n';
		CHECK(memcmp(b, want, LEN) == 0, "record %ld is %.11s, want %.11s", i, b, want);
	}
	done("%ld records through one shared offset", 2 * N);
}
