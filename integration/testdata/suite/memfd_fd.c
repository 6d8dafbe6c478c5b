/* memfd_fd: a sealed memfd holding data (never mapped) is read back and
 * extended at every step; its seals must stay. */
#include "suite.h"
#include <sys/mman.h>

int main(int argc, char **argv)
{
	int fd, seals;
	char rec[REC + 1];
	suite_init(argc, argv);
	fd = SYS(memfd_create("suite-data", MFD_CLOEXEC | MFD_ALLOW_SEALING));
	for (long i = 1; i <= 1000; i++) {
		rec_make(rec, i);
		write_all(fd, rec, REC);
	}
	SYS(fcntl(fd, F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_SEAL));
	for (long i = 1; i <= N; i++) {
		long total = 1000 + i - 1;
		seals = SYS(fcntl(fd, F_GET_SEALS));
		CHECK(seals == (F_SEAL_SHRINK | F_SEAL_SEAL), "seals %#x, want %#x", seals, F_SEAL_SHRINK | F_SEAL_SEAL);
		CHECK(lseek(fd, 0, SEEK_CUR) == total * REC, "memfd offset %ld, want %ld", (long)lseek(fd, 0, SEEK_CUR), total * REC);
		for (long k = 1; k <= total; k += 13) {
			CHECK(pread(fd, rec, REC, (k - 1) * REC) == REC, "pread: %s", strerror(errno));
			rec_check(rec, k);
		}
		CHECK(ftruncate(fd, 0) < 0 && errno == EPERM, "shrinking a F_SEAL_SHRINK memfd did not fail with EPERM");
		rec_make(rec, total + 1);
		write_all(fd, rec, REC);
		say("memfd holds %ld records", total + 1);
		tick();
	}
	done("memfd data kept");
}
